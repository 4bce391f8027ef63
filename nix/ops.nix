# NixOS module, part of `services.turret` (imported by module.nix): the metrics textfile for
# node_exporter, and checks of the dead-man switch's settings (`heartbeat`, `checkin`).
{
  config,
  lib,
  ...
}:
let
  inherit (lib)
    concatMap
    hasPrefix
    hasSuffix
    isAttrs
    isInt
    isString
    mkIf
    mkOption
    optional
    showOption
    types
    ;

  cfg = config.services.turret;
  metricsLoc = [
    "services"
    "turret"
    "metrics"
  ];
  settingsLoc = [
    "services"
    "turret"
    "settings"
  ];
  textfile = cfg.metrics.textfile;
  onFailure = [
    "seal"
    "revoke_derived"
  ];

  # A number of seconds, or a duration as Turret reads it (`90s`, `15m`, `24h`, `7d`).
  isDuration = v: (isInt v && v > 0) || (isString v && builtins.match "([0-9]{1,7}[smhd]){1,4}" v != null);

  # One failed assertion per bad key of `section` (a settings attrset, or null when absent).
  sectionChecks =
    name: section: checks:
    let
      loc = settingsLoc ++ [ name ];
    in
    if section == null then
      [ ]
    else if !isAttrs section then
      [ "${showOption loc} must be an attribute set." ]
    else
      concatMap (
        c: optional (section ? ${c.key} && !(c.ok section.${c.key})) "${showOption (loc ++ [ c.key ])} ${c.says}."
      ) checks;

  common = [
    {
      key = "on_failure";
      ok = v: builtins.elem v onFailure;
      says = "must be \"seal\" or \"revoke_derived\"";
    }
  ];
  heartbeat = cfg.settings.heartbeat or null;
  heartbeatMessages =
    sectionChecks "heartbeat" heartbeat (
      common
      ++ [
        {
          key = "url";
          ok = v: isString v && (hasPrefix "http://" v || hasPrefix "https://" v);
          says = "must be an http:// or https:// URL";
        }
        {
          key = "interval";
          ok = isDuration;
          says = "must be seconds or a duration (90s, 15m, 1h)";
        }
        {
          key = "timeout";
          ok = isDuration;
          says = "must be seconds or a duration (5s, 1m)";
        }
        {
          key = "misses";
          ok = v: isInt v && v >= 1;
          says = "must be a whole number of at least 1";
        }
      ]
    )
    ++ optional (
      isAttrs heartbeat && !(heartbeat ? url)
    ) "${showOption (settingsLoc ++ [ "heartbeat" "url" ])} must be set: the URL Turret probes.";
  checkinMessages = sectionChecks "checkin" (cfg.settings.checkin or null) (
    common
    ++ [
      {
        key = "max_interval";
        ok = isDuration;
        says = "must be seconds or a duration (12h, 1d, 7d)";
      }
    ]
  );
in
{
  options.services.turret.metrics = {
    textfile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text-files/turret.prom";
      description = ''
        Where `turret metrics --textfile` writes Turret's metrics for node_exporter's textfile
        collector (point its `--collector.textfile.directory` at this file's directory). A timer
        rewrites it atomically every `interval`. Null: no textfile (scrape `/metrics` on the
        admin socket instead).
      '';
    };
    interval = mkOption {
      type = types.str;
      default = "1min";
      description = "How often the textfile is rewritten (a systemd time span).";
    };
  };

  config = mkIf cfg.enable {
    assertions =
      map (message: {
        assertion = false;
        inherit message;
      }) (heartbeatMessages ++ checkinMessages)
      ++ [
        {
          assertion = textfile == null || (hasPrefix "/" textfile && hasSuffix ".prom" textfile);
          message = "${showOption (metricsLoc ++ [ "textfile" ])} = \"${toString textfile}\" must be an absolute path ending in .prom (node_exporter reads only *.prom files).";
        }
        {
          assertion = textfile == null || !(hasPrefix builtins.storeDir textfile);
          message = "${showOption (metricsLoc ++ [ "textfile" ])} must not be in the Nix store.";
        }
      ];

    # Writes the metrics the admin socket serves; as root, because the admin socket is root's.
    systemd.services.turret-metrics = mkIf (textfile != null) {
      description = "Write Turret's metrics for node_exporter's textfile collector";
      after = [ "turret.service" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/turret metrics --textfile ${textfile}";
        # It reads one unix socket and writes one file: nothing else.
        ReadWritePaths = [ (dirOf textfile) ];
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateNetwork = true;
        RestrictAddressFamilies = "AF_UNIX";
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        SystemCallArchitectures = "native";
        UMask = "0022";
      };
    };
    systemd.timers.turret-metrics = mkIf (textfile != null) {
      description = "Write Turret's metrics every ${cfg.metrics.interval}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnActiveSec = "0";
        OnUnitActiveSec = cfg.metrics.interval;
        AccuracySec = "5s";
      };
    };
    systemd.tmpfiles.rules = mkIf (textfile != null) [ "d ${dirOf textfile} 0755 root root -" ];
  };
}
