# `services.turret.credentialPolicy.<name>`: the key-age policy of one credential, rendered as
# Turret's `credentials:` section, with assertions that name the option path.
{
  lib,
  policyLoc,
  settingsLoc,
  credentialsLoc,
}:
let
  inherit (lib)
    attrNames
    concatLists
    filterAttrs
    mapAttrs
    mapAttrsToList
    mkOption
    showOption
    types
    ;
  # Turret's durations: up to four parts of digits and a unit (90d, 12h, 1d12h).
  isDuration = text: builtins.match "([0-9]{1,7}[smhd]){1,4}" text != null;
  duration = description: mkOption {
    type = types.nullOr types.str;
    default = null;
    example = "90d";
    inherit description;
  };
  text = description: mkOption {
    type = types.nullOr types.str;
    default = null;
    inherit description;
  };
in
{
  submodule = {
    options = {
      maxAge = duration "How old the credential may grow (s, m, h or d: `90d`); null for no limit.";
      warnBefore = duration "How long before `maxAge` the warnings start (Turret's default: 14d).";
      owner = text "Who owns the credential: shown by `turret rotate`.";
      rotateHint = text "How to make a new value (free text), shown by `turret rotate`.";
      enforceMaxAge = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Refuse to use the credential once it is older than `maxAge`: requests needing it get
          503 `credential_unavailable` until it is rotated. Off by default (warnings only).
        '';
      };
    };
  };

  settings =
    policies:
    mapAttrs (
      _: p:
      filterAttrs (_: v: v != null && v != false) {
        max_age = p.maxAge;
        warn_before = p.warnBefore;
        inherit (p) owner;
        rotate_hint = p.rotateHint;
        enforce_max_age = p.enforceMaxAge;
      }
    ) policies;

  assertions =
    cfg:
    [
      {
        assertion = cfg.credentialPolicy == { } || !(cfg.settings ? credentials);
        message = "${showOption (settingsLoc ++ [ "credentials" ])} and ${showOption policyLoc} are both set: use ${showOption policyLoc} alone.";
      }
    ]
    ++ concatLists (
      mapAttrsToList (
        name: p:
        let
          option = key: showOption (policyLoc ++ [ name key ]);
        in
        [
          {
            assertion = cfg.credentials ? ${name};
            message = "${showOption (policyLoc ++ [ name ])} is for a credential ${showOption credentialsLoc} does not provide (provided: ${lib.concatStringsSep ", " (attrNames cfg.credentials)}).";
          }
          {
            assertion = p.maxAge == null || isDuration p.maxAge;
            message = "${option "maxAge"} = \"${toString p.maxAge}\" is not a duration: digits and s, m, h or d (90d, 12h, 1d12h).";
          }
          {
            assertion = p.warnBefore == null || isDuration p.warnBefore;
            message = "${option "warnBefore"} = \"${toString p.warnBefore}\" is not a duration: digits and s, m, h or d (14d).";
          }
          {
            assertion = !p.enforceMaxAge || p.maxAge != null;
            message = "${option "enforceMaxAge"} needs ${option "maxAge"}.";
          }
        ]
      ) cfg.credentialPolicy
    );
}
