# nix-build: the `flotilla` package from this tree (nix/package.nix). The NixOS module is
# nix/module.nix; flake.nix offers both to flakes.
{
  pkgs ? import <nixpkgs> { },
}:
pkgs.callPackage ./nix/package.nix { }
