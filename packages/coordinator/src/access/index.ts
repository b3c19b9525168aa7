import { adminv1 } from "@flotilla/protocol";
import { auditMethods } from "../audit/audit-service.ts";
import type { ServiceContext } from "../context.ts";
import { serveMethods, type Feature } from "../feature.ts";
import { apiTokenMethods } from "./api-tokens.ts";
import { loginMethods } from "./login.ts";
import { memberMethods } from "./members.ts";

/**
 * Access control as a coordinator feature: AdminService's logins, organizations, members, admin
 * keys, API tokens and audit log. (Its devices and join tokens are the devices feature's; who may
 * call what is decided for every service by the authorization interceptor, interceptor.ts.)
 */
export function accessFeature(ctx: ServiceContext): Feature {
  return {
    name: "access",
    routes(router) {
      serveMethods(router, adminv1.AdminService, { ...loginMethods(ctx), ...memberMethods(ctx), ...apiTokenMethods(ctx), ...auditMethods(ctx) });
    },
    serviceNames: [adminv1.AdminService.typeName],
    close() {},
  };
}
