# Evaluates the Turret NixOS module with nixpkgs' lib and the option stubs, and returns plain data
# for the Python tests (`nix-instantiate --eval --strict --json -A host.system ...`).
{
  nixpkgsLib, # string: a local copy of nix-community/nixpkgs.lib
  toolsDir, # string: directory with bin/turret and bin/kill
  host ? null, # path: a test host configuration module (for the `host` report)
}:
let
  lib = import (/. + nixpkgsLib + "/lib");
  pkgs = import ./stub-pkgs.nix { inherit lib toolsDir; };

  evalHost =
    modules:
    lib.evalModules {
      modules = [
        ./stub-options.nix
        { _module.args.pkgs = pkgs; }
      ]
      ++ modules;
    };

  optionInfo = opt: {
    type = opt.type.description;
    description = opt.description or null;
  };

  report =
    eval:
    let
      inherit (eval) config options;
      configDrv = config.environment.etc."turret/turret.yaml".source;
    in
    {
      # What NixOS would refuse to build with, and what it would print.
      checks = {
        failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
        inherit (config) warnings;
      };

      options = {
        top = lib.mapAttrs (_: optionInfo) (lib.filterAttrs (_: lib.isOption) options.services.turret);
        settings = lib.mapAttrs (_: optionInfo) (
          lib.filterAttrs (_: lib.isOption) (options.services.turret.settings.type.getSubOptions [ ])
        );
      };

      system = {
        inherit (config.systemd) services sockets timers;
        tmpfiles = config.systemd.tmpfiles.rules;
        inherit (config.users) groups users;
        sopsSecrets = config.sops.secrets;
        etc = lib.mapAttrs (_: e: { source = toString e.source; }) config.environment.etc;
        configBuild = {
          inherit (configDrv) buildCommand;
          nativeBuildInputs = map toString configDrv.env.nativeBuildInputs;
          unchecked = {
            path = toString configDrv.env.unchecked;
            inherit (configDrv.env.unchecked) value;
          };
        };
      };
    };

  vmTest = import ../../nix/tests/vm.nix { inherit pkgs; };
  vmNode = vmTest.nodes.machine;
  vmBase = evalHost [ vmNode ];
  # A specialisation inherits the parent configuration and adds its own definitions.
  vmSpecialised = evalHost [
    vmNode
    vmBase.config.specialisation.more-grants.configuration
  ];
in
{
  host = report (evalHost [
    ../../nix/module.nix
    host
  ]);

  vm = {
    inherit (vmTest) name testScript;
    base = report vmBase;
    specialised = report vmSpecialised;
  };
}
