# Declarations of the NixOS (and sops-nix) options the Turret module and the test hosts write
# into, with the types NixOS gives them, so `lib.evalModules` can check the module without the
# rest of NixOS. Undeclared options stay errors, as in NixOS, so a misspelt option fails here.
{ lib, ... }:
let
  inherit (lib) mkOption types;

  atom = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
  ];
  # A unit directive: one value, or a list rendered as one line per element.
  unitOption = types.either atom (types.listOf atom);
  strings = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  section = mkOption {
    type = types.attrsOf unitOption;
    default = { };
  };
  triggers = mkOption {
    type = types.listOf unitOption;
    default = [ ];
  };

  unitOptions = {
    enable = mkOption {
      type = types.bool;
      default = true;
    };
    description = mkOption {
      type = types.str;
      default = "";
    };
    documentation = strings;
    wantedBy = strings;
    requiredBy = strings;
    wants = strings;
    requires = strings;
    after = strings;
    before = strings;
    bindsTo = strings;
    partOf = strings;
    conflicts = strings;
    unitConfig = section;
    restartTriggers = triggers;
    reloadTriggers = triggers;
  };

  serviceOptions = unitOptions // {
    serviceConfig = section;
    environment = mkOption {
      type = types.attrsOf (types.nullOr (types.either types.str types.path));
      default = { };
    };
    path = mkOption {
      type = types.listOf (types.either types.package types.str);
      default = [ ];
    };
    restartIfChanged = mkOption {
      type = types.bool;
      default = true;
    };
    reloadIfChanged = mkOption {
      type = types.bool;
      default = false;
    };
    stopIfChanged = mkOption {
      type = types.bool;
      default = true;
    };
  };

  timerOptions = unitOptions // {
    timerConfig = section;
  };

  socketOptions = unitOptions // {
    socketConfig = section;
    listenStreams = strings;
    listenDatagrams = strings;
  };

  etcEntry = {
    options = {
      source = mkOption { type = types.path; };
      mode = mkOption {
        type = types.str;
        default = "symlink";
      };
      user = mkOption {
        type = types.str;
        default = "+0";
      };
      group = mkOption {
        type = types.str;
        default = "+0";
      };
    };
  };

  sopsSecret =
    { name, ... }:
    {
      options = {
        path = mkOption {
          type = types.str;
          default = "/run/secrets/${name}";
        };
        owner = mkOption {
          type = types.str;
          default = "root";
        };
        group = mkOption {
          type = types.str;
          default = "root";
        };
        mode = mkOption {
          type = types.str;
          default = "0400";
        };
        restartUnits = strings;
        reloadUnits = strings;
      };
    };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            assertion = mkOption { type = types.bool; };
            message = mkOption { type = types.str; };
          };
        }
      );
      default = [ ];
    };
    warnings = strings;
    specialisation = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.configuration = mkOption { type = types.deferredModule; };
        }
      );
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    environment.etc = mkOption {
      type = types.attrsOf (types.submodule etcEntry);
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.members = strings;
        }
      );
      default = { };
    };
    users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            isNormalUser = mkOption {
              type = types.bool;
              default = false;
            };
            extraGroups = strings;
          };
        }
      );
      default = { };
    };
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule { options = serviceOptions; });
      default = { };
    };
    systemd.sockets = mkOption {
      type = types.attrsOf (types.submodule { options = socketOptions; });
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf (types.submodule { options = timerOptions; });
      default = { };
    };
    systemd.tmpfiles.rules = strings;
    sops.defaultSopsFile = mkOption { type = types.path; };
    sops.secrets = mkOption {
      type = types.attrsOf (types.submodule sopsSecret);
      default = { };
    };
  };
}
