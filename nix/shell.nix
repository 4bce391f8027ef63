# Development shell: the package's dependencies plus the tools `make test` runs (pkg-config and
# libsystemd let pip build systemd-python into the project's .venv).
{ pkgs }:
let
  turret = pkgs.callPackage ./package.nix { };
in
pkgs.mkShell {
  inputsFrom = [ turret ];
  packages = [
    pkgs.gnumake
    pkgs.mypy
    pkgs.nix
    pkgs.pkg-config
    (pkgs.systemdLibs or pkgs.systemd)
    pkgs.ruff
    pkgs.python3Packages.pytest
    pkgs.python3Packages.pytest-aiohttp
    pkgs.python3Packages.pytest-timeout
    pkgs.python3Packages.types-pyyaml
  ];
}
