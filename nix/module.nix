# NixOS module: `services.turret`.
#
# Secrets never enter the Nix store or the config file: the config names credentials, and each
# credential reaches the service through `LoadCredential=` from a root-only file (a sops-nix
# secret, for example), so the DynamicUser service can read it without owning it.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    attrNames
    concatMap
    elemAt
    filter
    hasPrefix
    hasSuffix
    isAttrs
    isList
    isString
    isPath
    literalExpression
    mapAttrsToList
    mkEnableOption
    mkIf
    mkOption
    optionalAttrs
    removeSuffix
    showOption
    splitString
    subtractLists
    types
    unique
    ;

  cfg = config.services.turret;
  turretLib = import ./lib.nix { inherit lib; };
  settingsFormat = pkgs.formats.yaml { };
  settingsLoc = [
    "services"
    "turret"
    "settings"
  ];
  credentialsLoc = [
    "services"
    "turret"
    "credentials"
  ];
  adminLoc = [
    "services"
    "turret"
    "admin"
  ];
  policyLoc = [
    "services"
    "turret"
    "credentialPolicy"
  ];
  # The admin socket's path is fixed: `turret status` and friends find it there by default.
  adminSocket = "/run/turret/admin.sock";
  # `admin:` in the config: who besides root and Turret's own uid may use the admin socket.
  adminSettings =
    optionalAttrs (cfg.admin.allowUids != [ ]) { allow_uids = cfg.admin.allowUids; }
    // optionalAttrs (cfg.admin.allowGroup != null) { allow_group = cfg.admin.allowGroup; };

  # One source of truth: the same directives as the unit for other distributions.
  hardening = turretLib.hardeningFromFile ../systemd/turret.service;

  # `NAME:PATH` for each credential: the LoadCredential= lines, and what a restart follows.
  credentialLines = mapAttrsToList (name: path: "${name}:${toString path}") cfg.credentials;

  renderedSettings =
    turretLib.stripNulls cfg.settings
    // optionalAttrs (adminSettings != { }) { admin = adminSettings; }
    // optionalAttrs (cfg.credentialPolicy != { }) { credentials = policySettings; };
  uncheckedConfigFile = settingsFormat.generate "turret-unchecked.yaml" renderedSettings;
  # A config Turret would refuse to start with fails the build instead (credentials are not
  # needed for the check, and are not available at build time anyway).
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "turret.yaml"
        {
          nativeBuildInputs = [ cfg.package ];
          unchecked = uncheckedConfigFile;
          preferLocalBuild = true;
        }
        ''
          cp "$unchecked" "$out"
          turret check-config "$out"
        ''
    else
      uncheckedConfigFile;
  # A stable path, so that `systemctl reload` makes the running service read the new config.
  configPath = "/etc/turret/turret.yaml";

  methods = [
    "GET"
    "HEAD"
    "POST"
    "PUT"
    "PATCH"
    "DELETE"
    "OPTIONS"
  ];

  grantModule = {
    freeformType = settingsFormat.type;
    options = {
      service = mkOption {
        type = types.str;
        description = "Name of the service (a key of `settings.services`) this grant is for.";
      };
      methods = mkOption {
        type = types.nonEmptyListOf (types.enum methods);
        description = "HTTP methods the agent may use.";
      };
      paths = mkOption {
        type = types.nonEmptyListOf types.str;
        example = [ "/api/v1/repos/acme/*/issues/**" ];
        description = "Path globs: `*` matches within a segment, `**` any number of segments.";
      };
    };
  };

  agentModule = {
    freeformType = settingsFormat.type;
    options = {
      token_sha256 = mkOption {
        type = types.nullOr (types.strMatching "[0-9a-f]{64}");
        default = null;
        description = "SHA-256 (hex) of the agent's token, as printed by `turret token new AGENT`.";
      };
      token_credential = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Name of a credential (see `services.turret.credentials`) holding the token.";
      };
      proxy = mkOption {
        type = types.listOf (types.submodule grantModule);
        default = [ ];
        description = "What the agent may request through `/v1/proxy/SERVICE/PATH`.";
      };
      bind = mkOption {
        type = types.nullOr settingsFormat.type;
        default = null;
        example = {
          unit = "opencode.service";
        };
        description = ''
          The callers the agent's tokens work for, on the agents' unix socket only: `{ uid = N; }`,
          `{ user = "NAME"; }` or `{ unit = "NAME.service"; }`, or a list of them (any one is
          enough). A service named here must be defined on this host (`systemd.services`).
        '';
      };
    };
  };

  serviceModule = {
    freeformType = settingsFormat.type;
    options = {
      url = mkOption {
        type = types.str;
        example = "https://git.example.com";
        description = "Origin and base path of the upstream; requests go nowhere else.";
      };
      auth = mkOption {
        type = types.attrsOf settingsFormat.type;
        example = {
          bearer = "gitea-token";
        };
        description = ''
          How the credential is injected: exactly one of `bearer`, `basic`, `header`, `query`,
          naming credentials from `services.turret.credentials`.
        '';
      };
    };
  };

  credentialRefs = turretLib.credentialReferences settingsLoc cfg.settings;
  referencedNames = unique (map (r: r.name) credentialRefs);
  providedNames = attrNames cfg.credentials;

  credentialAssertions = concatMap (
    name:
    let
      path = cfg.credentials.${name};
      option = showOption (credentialsLoc ++ [ name ]);
    in
    [
      {
        assertion = !(isPath path);
        message = "${option} is a Nix path, which would be copied into the world-readable Nix store; give the path of a root-only file as a string, such as config.sops.secrets.\"turret/${name}\".path.";
      }
      {
        assertion = !(hasPrefix "${builtins.storeDir}/" (toString path));
        message = "${option} = \"${toString path}\" is in the Nix store, which every local user can read; point it at a root-only file outside the store, such as config.sops.secrets.\"turret/${name}\".path.";
      }
      {
        assertion = builtins.match "[A-Za-z0-9_.@-]{1,128}" name != null;
        message = "${option}: a credential name may only contain A-Z a-z 0-9 _ . @ - (it becomes a file name under $CREDENTIALS_DIRECTORY).";
      }
    ]
  ) providedNames;

  referenceAssertions = map (ref: {
    assertion = cfg.credentials ? ${ref.name};
    message = "${ref.option} names the credential \"${ref.name}\", which ${showOption credentialsLoc} does not provide (provided: ${turretLib.showNames providedNames}).";
  }) credentialRefs;

  grantAssertions = map (g: {
    assertion = false;
    message = "${g.option} names the service \"${g.service}\", which ${showOption (settingsLoc ++ [ "services" ])} does not define (defined: ${turretLib.showNames (attrNames cfg.settings.services)}).";
  }) (turretLib.unknownGrantServices settingsLoc cfg.settings);

  # Every `bind: {unit: ...}` of an agent or a group, with the option path that sets it.
  bindEntries =
    spec:
    let
      b = spec.bind or null;
    in
    if b == null then
      [ ]
    else if isList b then
      b
    else
      [ b ];
  boundUnits =
    loc: spec:
    concatMap (
      e:
      if isAttrs e && isString (e.unit or null) then
        [
          {
            option = showOption (loc ++ [ "bind" "unit" ]);
            inherit (e) unit;
          }
        ]
      else
        [ ]
    ) (bindEntries spec);
  allBoundUnits = concatMap (
    kind:
    let
      specs = cfg.settings.${kind} or { };
    in
    concatMap (n: boundUnits (settingsLoc ++ [ kind n ]) specs.${n}) (attrNames specs)
  ) [ "agents" "groups" ];
  # A service is defined as `systemd.services.NAME`, an instance `NAME@I.service` by its
  # template `systemd.services."NAME@"` too. Scopes are transient: nothing to look up.
  serviceDefined =
    unit:
    let
      name = removeSuffix ".service" unit;
      template = "${elemAt (splitString "@" name) 0}@";
    in
    config.systemd.services ? ${name}
    || (builtins.match ".+@.*" name != null && config.systemd.services ? ${template});
  bindAssertions = map (b: {
    assertion = !(hasSuffix ".service" b.unit) || serviceDefined b.unit;
    message = "${b.option} = \"${b.unit}\", which is not a service of this host (systemd.services.\"${removeSuffix ".service" b.unit}\" is not defined): no caller could ever match the binding.";
  }) allBoundUnits;

  agentAssertions = mapAttrsToList (name: agent: {
    assertion = (agent.token_sha256 == null) != (agent.token_credential == null);
    message = "${showOption (settingsLoc ++ [ "agents" name ])} needs exactly one of token_sha256 and token_credential.";
  }) cfg.settings.agents;
  # `credentials:` in the config (key age) from `credentialPolicy`, in Turret's own spelling.
  policy = import ./credential-policy.nix { inherit lib policyLoc settingsLoc credentialsLoc; };
  policySettings = policy.settings cfg.credentialPolicy;
in
{
  imports = [ ./ops.nix ];

  options.services.turret = {
    enable = mkEnableOption "Turret, the credential gateway for LLM agents";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage (turret + \"/nix/package.nix\") { }";
      description = "The Turret package to run.";
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          listen = mkOption {
            type = types.nonEmptyListOf types.str;
            default = [
              "127.0.0.1:8421"
              "unix:/run/turret/agents.sock"
            ];
            description = ''
              Addresses (`HOST:PORT`, `[IPv6]:PORT` or `unix:/PATH`). They become the
              `ListenStream=` lines of `turret.socket`; systemd binds them and hands them over.
            '';
          };
          services = mkOption {
            type = types.attrsOf (types.submodule serviceModule);
            default = { };
            description = "Upstream services by name.";
          };
          agents = mkOption {
            type = types.attrsOf (types.submodule agentModule);
            default = { };
            description = "Agents by name, with their token and grants.";
          };
        };
      };
      default = { };
      description = ''
        Turret's configuration, rendered to YAML (see the README for every key). Keys without an
        option here are passed through unchanged; null values are left out. It must not contain
        secrets: name credentials from `services.turret.credentials` instead.
      '';
    };

    credentials = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = literalExpression ''
        {
          "gitea-token" = config.sops.secrets."turret/gitea-token".path;
        }
      '';
      description = ''
        Credential name to the path of a file holding it, outside the Nix store. Each becomes a
        `LoadCredential=NAME:PATH` line, so the file can stay root-owned and mode 0400. With
        sops-nix, also set `sops.secrets."NAME".restartUnits = [ "turret.service" ];` so that a
        changed secret restarts Turret (a reload keeps the credentials loaded at start).
      '';
    };

    socketUser = mkOption {
      type = types.str;
      default = "root";
      description = "Owner of the agents' unix socket.";
    };

    socketGroup = mkOption {
      type = types.str;
      default = "turret-agents";
      description = ''
        Group of the agents' unix socket: put the agents' users in it. The module creates the
        group when it has the default name.
      '';
    };

    socketMode = mkOption {
      type = types.strMatching "0?[0-7]{3}";
      default = "0660";
      description = "Mode of the agents' unix socket; keep \"other\" bits off.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Check the generated config with `turret check-config` at build time.";
    };

    credentialPolicy = mkOption {
      type = types.attrsOf (types.submodule policy.submodule);
      default = { };
      example = literalExpression ''
        {
          "gitea-token" = { maxAge = "90d"; owner = "alice"; rotateHint = "Gitea > Settings > Applications"; };
        }
      '';
      description = ''
        Key age per credential (a name of `services.turret.credentials`): how old it may grow,
        when to warn, who owns it and how it is rotated. `turret credentials` shows each one's
        age and state; `turret rotate NAME` walks through a rotation. Rendered as `credentials:`
        in the config.
      '';
    };

    admin = {
      allowUids = mkOption {
        type = types.listOf types.ints.unsigned;
        default = [ ];
        description = ''
          Uids besides root that may use the admin socket (`turret status`, `turret revoke`,
          `turret killswitch`, ...). Turret checks each connection's SO_PEERCRED uid; the socket
          itself is root's (0600) unless `allowGroup` is set, so a uid listed here also needs
          access to it (through `allowGroup`).
        '';
      };
      allowGroup = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "wheel";
        description = ''
          A group whose members may use the admin socket: the socket becomes root:GROUP 0660 and
          Turret accepts a connection whose uid is in the group (primary or supplementary).
        '';
      };
    };
  };

  config = mkIf cfg.enable {
    assertions =
      credentialAssertions
      ++ referenceAssertions
      ++ grantAssertions
      ++ agentAssertions
      ++ policy.assertions cfg
      ++ bindAssertions
      ++ [
        {
          assertion = !(cfg.settings ? admin);
          message = "${showOption (settingsLoc ++ [ "admin" ])} must not be set: use ${showOption (adminLoc ++ [ "allowUids" ])} and ${showOption (adminLoc ++ [ "allowGroup" ])} (the admin socket is ${adminSocket}, from turret-admin.socket).";
        }
        {
          assertion =
            cfg.admin.allowGroup == null
            || builtins.match "[a-z_][a-z0-9_-]{0,31}" cfg.admin.allowGroup != null;
          message = "${showOption (adminLoc ++ [ "allowGroup" ])} = \"${toString cfg.admin.allowGroup}\" is not a group name (a-z, 0-9, _ and -, starting with a letter or _).";
        }
        {
          assertion = (cfg.settings.credentials_dir or null) == null;
          message = "${showOption (settingsLoc ++ [ "credentials_dir" ])} must not be set: the module gives Turret its credentials through LoadCredential= ($CREDENTIALS_DIRECTORY); use ${showOption credentialsLoc}.";
        }
      ];

    warnings =
      map (
        address:
        "${showOption (settingsLoc ++ [ "listen" ])} contains \"${address}\", which is not on loopback: hosts that can reach it may try agent tokens."
      ) (filter (a: !(turretLib.isLocalListen a)) cfg.settings.listen)
      ++ map (
        name:
        "${showOption (credentialsLoc ++ [ name ])} is not referenced by ${showOption settingsLoc}."
      ) (subtractLists referencedNames providedNames);

    environment.etc."turret/turret.yaml".source = configFile;
    # `turret status`, `turret revoke`, ... on the operator's PATH; they use ${adminSocket}.
    environment.systemPackages = [ cfg.package ];

    users.groups = mkIf (cfg.socketGroup == "turret-agents") { turret-agents = { }; };

    systemd.sockets.turret = {
      description = "Turret credential gateway sockets";
      wantedBy = [ "sockets.target" ];
      listenStreams = map turretLib.listenStream cfg.settings.listen;
      socketConfig = {
        # Which of Turret's APIs these sockets serve; Turret refuses a name it does not know.
        FileDescriptorName = "agents";
        SocketUser = cfg.socketUser;
        SocketGroup = cfg.socketGroup;
        SocketMode = cfg.socketMode;
        DirectoryMode = "0755";
      };
    };

    # The admin socket: root's alone unless admin.allowGroup opens it to a group; Turret also
    # checks every connection's SO_PEERCRED uid. It serves the admin API only.
    systemd.sockets.turret-admin = {
      description = "Turret credential gateway admin socket";
      wantedBy = [ "sockets.target" ];
      listenStreams = [ adminSocket ];
      socketConfig = {
        FileDescriptorName = "admin";
        Service = "turret.service";
        SocketUser = "root";
        SocketGroup = if cfg.admin.allowGroup == null then "root" else cfg.admin.allowGroup;
        SocketMode = if cfg.admin.allowGroup == null then "0600" else "0660";
        DirectoryMode = "0755";
      };
    };

    systemd.services.turret = {
      description = "Turret credential gateway for LLM agents";
      requires = [ "turret.socket" ];
      # The admin socket is wanted, not required: Turret serves agents without it.
      wants = [ "turret-admin.socket" ];
      after = [
        "turret.socket"
        "turret-admin.socket"
        "network.target"
      ];
      # A changed config is applied by reload; changed credentials need a restart, because
      # systemd copies them into $CREDENTIALS_DIRECTORY only at start.
      reloadTriggers = [ configFile ];
      restartTriggers = credentialLines;
      # `hardening` is the unit file's `# Hardening` block, StateDirectory=turret (the state store,
      # /var/lib/private/turret: back it up to keep revocations across a reinstall) among it.
      serviceConfig = hardening // {
        Type = "notify";
        ExecStart = "${cfg.package}/bin/turret serve --config ${configPath}";
        # Each socket is served by the API its FileDescriptorName= names (agents, admin).
        Sockets = [
          "turret.socket"
          "turret-admin.socket"
        ];
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        LoadCredential = credentialLines;
        Restart = "on-failure";
        # Exit status 78 means a bad config or credential: retrying cannot help.
        RestartPreventExitStatus = 78;
        # No journald rate limit: it would drop audit records; Turret limits itself (see the unit).
        LogRateLimitIntervalSec = 0;
        WatchdogSec = "30s";
      };
    };
  };
}
