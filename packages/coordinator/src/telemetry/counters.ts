/** What this coordinator ingested since it started, for /metrics. */
export class TelemetryCounters {
  logBatches = 0;
  logLines = 0;
  logLinesDuplicate = 0;
  metricBatches = 0;
  metricSamples = 0;
  refusedBatches = 0;
  otlpExported = 0;
  otlpFailed = 0;
}
