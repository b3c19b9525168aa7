# NixOS module: services.flotilla.agent and services.flotilla.coordinator (docs/install.md).
# The units match the .deb's (packages/coordinator/src/install/units.ts): the agent runs as root
# with its identity in /var/lib/flotilla-agent and enrolls once with the join string in
# `joinFile`; the coordinator runs as a dynamic user with its data in
# /var/lib/flotilla-coordinator.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.flotilla;
  toml = pkgs.formats.toml { };
  inherit (lib)
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    types
    ;
in
{
  options.services.flotilla = {
    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The flotilla package both services run.";
    };

    agent = {
      enable = mkEnableOption "the Flotilla agent, which the coordinator deploys releases and NixOS systems through";
      joinFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/flotilla-join";
        description = ''
          A file, readable by root alone and kept out of the Nix store, holding
          `FLOTILLA_JOIN=flotilla-join-v1....` (from `flotilla join-token create`). Needed
          only until the device has enrolled.
        '';
      };
      settings = mkOption {
        type = toml.type;
        default = { };
        example = {
          journal_units = [ "nginx.service" ];
          tunnel_ports = [ 22 ];
        };
        description = "Keys of the agent's config file (`flotilla agent --help` lists every option).";
      };
    };

    coordinator = {
      enable = mkEnableOption "the Flotilla coordinator";
      settings = mkOption {
        type = toml.type;
        default = { };
        example = {
          listen = "0.0.0.0:7700";
          public_url = "https://fleet.example.com:7700";
        };
        description = "Keys of the coordinator's config file (`flotilla coordinator --help`).";
      };
      environmentFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/flotilla-coordinator.env";
        description = "Secrets as FLOTILLA_* variables, e.g. FLOTILLA_DATABASE_URL=postgres://...";
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the port of `settings.listen` in the firewall.";
      };
    };
  };

  config = mkMerge [
    (mkIf cfg.agent.enable {
      environment.systemPackages = [ cfg.package ];
      systemd.services.flotilla-agent = {
        description = "Flotilla agent";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        # switch-to-configuration, nix and systemctl, for the NixOS releases it activates.
        path = [
          config.nix.package
          config.systemd.package
          pkgs.coreutils
        ];
        # A running agent is not restarted by a switch: it is the one switching, and it restarts
        # itself into a new version when a release of the agent says so.
        restartIfChanged = false;
        # V8's young generation at 1 MiB semi-spaces instead of 16: the idle agent's memory
        # stays near its floor (AGENT_NODE_OPTIONS in packages/protocol/src/agent-flags.ts,
        # bench/agent.ts). The agent removes it from what it passes to the commands it runs.
        environment.NODE_OPTIONS = "--max-semi-space-size=1";
        serviceConfig = {
          Type = "simple";
          ExecStart = "${lib.getExe cfg.package} agent --config ${toml.generate "agent.toml" cfg.agent.settings} --state-dir \${STATE_DIRECTORY}";
          EnvironmentFile = lib.optional (cfg.agent.joinFile != null) "-${cfg.agent.joinFile}";
          StateDirectory = "flotilla-agent";
          StateDirectoryMode = "0700";
          Restart = "always";
          RestartSec = "5s";
          KillMode = "process";
          LockPersonality = true;
          ProtectClock = true;
          ProtectKernelLogs = true;
          RestrictRealtime = true;
          SystemCallArchitectures = "native";
          UMask = "0022";
        };
      };
    })

    (mkIf cfg.coordinator.enable {
      environment.systemPackages = [ cfg.package ];
      networking.firewall.allowedTCPPorts = mkIf cfg.coordinator.openFirewall [
        (lib.toInt (lib.last (lib.splitString ":" (cfg.coordinator.settings.listen or "127.0.0.1:7700"))))
      ];
      systemd.services.flotilla-coordinator = {
        description = "Flotilla coordinator";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        serviceConfig = {
          Type = "simple";
          DynamicUser = true;
          ExecStart = "${lib.getExe cfg.package} coordinator --config ${toml.generate "coordinator.toml" cfg.coordinator.settings} --data-dir \${STATE_DIRECTORY}";
          EnvironmentFile = lib.optional (cfg.coordinator.environmentFile != null) cfg.coordinator.environmentFile;
          StateDirectory = "flotilla-coordinator";
          StateDirectoryMode = "0700";
          Restart = "always";
          RestartSec = "5s";
          UMask = "0077";
          # Every connected device holds one socket of the coordinator's.
          LimitNOFILE = 1048576;
          CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
          AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" ];
        };
      };
    })
  ];
}
