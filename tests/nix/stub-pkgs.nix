# The few `pkgs` attributes the Turret module uses, standing in for nixpkgs where it cannot be
# fetched. Derivations are plain attribute sets that keep their inputs, so the test can run the
# build-time config check itself; `toolsDir` holds real `bin/turret` and `bin/kill` executables,
# so the rendered units pass `systemd-analyze verify`.
{ lib, toolsDir }:
let
  fakeDerivation =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name;
      outPath = "${builtins.storeDir}/${
        builtins.substring 0 32 (builtins.hashString "sha256" (name + builtins.toJSON attrs))
      }-${name}";
    };

  # The value type of nixpkgs' `formats.yaml`: JSON-like data.
  yamlValue =
    lib.types.nullOr (
      lib.types.oneOf [
        lib.types.bool
        lib.types.int
        lib.types.float
        lib.types.str
        lib.types.path
        (lib.types.attrsOf yamlValue)
        (lib.types.listOf yamlValue)
      ]
    )
    // {
      description = "YAML value";
    };

  tools = {
    type = "derivation";
    name = "test-tools";
    outPath = toolsDir;
  };
in
{
  formats.yaml =
    { }:
    {
      type = yamlValue;
      # Like nixpkgs: the value goes to the builder as JSON in `value`.
      generate = name: value: fakeDerivation name { value = builtins.toJSON value; };
    };

  runCommand = name: env: buildCommand: fakeDerivation name { inherit env buildCommand; };

  writeText = name: text: fakeDerivation name { inherit text; };

  # The module's default package: stands for `nix/package.nix` built, i.e. the test's turret.
  callPackage =
    fn: _:
    if fn == ../../nix/package.nix then tools else throw "stub pkgs: no callPackage for ${toString fn}";

  # The VM test's driver is not run here: its arguments are returned for inspection.
  testers.runNixOSTest = test: test;

  coreutils = tools;
  curl = fakeDerivation "curl" { };
  python3.interpreter = "/usr/bin/python3";
  turret = tools;
}
