# Turret as a Python application, callPackage style: `pkgs.callPackage ./nix/package.nix { }`.
# The version and the dependency list come from pyproject.toml; the test suite is the check phase.
{
  lib,
  python3Packages,
}:
let
  pyproject = lib.importTOML ../pyproject.toml;
in
python3Packages.buildPythonApplication {
  pname = "turret";
  inherit (pyproject.project) version;
  pyproject = true;

  # Only what the build and the tests read, so editing docs or Nix files does not rebuild.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../README.md
      ../turret
      ../tests
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = [
    python3Packages.aiohttp
    python3Packages.ahocorasick-rs
    python3Packages.pyyaml
    python3Packages.prometheus-client
    python3Packages.pyjwt
    python3Packages.cryptography
    python3Packages.botocore
    # Renamed from `systemd` to `systemd-python` in nixpkgs; accept either.
    (python3Packages.systemd-python or python3Packages.systemd)
    # The mcp extra: `turret mcp`, so an agent unit can run it from the same package. The SDK
    # brings starlette, sse-starlette, pydantic and httpx2; uvicorn serves `--listen`.
    # pyproject pins mcp>=2.3,<3: a nixpkgs older than that needs an override of `mcp`.
    python3Packages.mcp
    python3Packages.uvicorn
  ];

  nativeCheckInputs = [
    python3Packages.pytestCheckHook
    python3Packages.pytest-aiohttp
    python3Packages.pytest-timeout
  ];

  # The sandbox has loopback networking, so the fake-upstream tests run; tests that need Nix
  # itself, a real systemd or the network outside skip or are left out here.
  disabledTestPaths = [ "tests/nix" ];

  pythonImportsCheck = [ "turret" ];

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.mit;
    mainProgram = "turret";
    platforms = lib.platforms.linux;
  };
}
