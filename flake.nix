{
  description = "Flotilla: fleet management and deployment for NixOS and Linux machines";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        flotilla = pkgs.callPackage ./nix/package.nix { };
        default = flotilla;
      });

      # services.flotilla.agent and services.flotilla.coordinator, with this flake's package.
      nixosModules.default =
        { pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.flotilla.package = nixpkgs.lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.flotilla;
        };
    };
}
