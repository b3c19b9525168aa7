# Flotilla built from this source tree with Nix: the npm dependencies come from package-lock.json
# (importNpmLock reads its integrity hashes, so no separate dependency hash is kept), the
# `flotilla` program is the bundle `npm run build` makes, run by Nix's Node 20. On NixOS the
# Node runtime is a store dependency like any other, so this package needs no single executable.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_20,
  python3,
  makeWrapper,
}:

let
  root = ../.;
  src = lib.cleanSourceWith {
    src = root;
    filter =
      path: type:
      let
        name = baseNameOf path;
      in
      lib.cleanSourceFilter path type
      && !(builtins.elem name [
        "node_modules"
        "dist"
        ".flotilla"
        "result"
      ]);
  };
in
buildNpmPackage {
  pname = "flotilla";
  version = (lib.importJSON ../package.json).version;
  inherit src;
  nodejs = nodejs_20;

  npmDeps = importNpmLock { npmRoot = src; };
  npmConfigHook = importNpmLock.npmConfigHook;

  # better-sqlite3 (the coordinator's embedded database) compiles its addon.
  nativeBuildInputs = [
    python3
    makeWrapper
  ];
  npmBuildScript = "build";

  installPhase = ''
    runHook preInstall
    mkdir -p $out/lib/flotilla $out/bin
    cp -r package.json node_modules packages $out/lib/flotilla/
    makeWrapper ${nodejs_20}/bin/node $out/bin/flotilla \
      --add-flags $out/lib/flotilla/packages/cli/dist/flotilla.mjs
    runHook postInstall
  '';

  meta = {
    description = "Fleet management and deployment for NixOS and Linux machines";
    mainProgram = "flotilla";
    platforms = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };
}
