# Pure helpers for the Turret NixOS module: no options, no pkgs, so tests can evaluate them with
# nothing but nixpkgs' lib.
{ lib }:
let
  inherit (lib)
    concatMap
    concatStringsSep
    filter
    filterAttrs
    findFirst
    foldl'
    hasPrefix
    hasSuffix
    head
    imap0
    isAttrs
    isDerivation
    isList
    isString
    length
    mapAttrs
    mapAttrsToList
    optional
    removeSuffix
    showOption
    splitString
    substring
    stringLength
    ;

  trim =
    s:
    let
      m = builtins.match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" s;
    in
    if m == null then "" else head m;

  isComment = l: hasPrefix "#" l || hasPrefix ";" l;
  isSectionHeader = l: builtins.match "[[][-A-Za-z0-9 _]+[]]" l != null;
  # "# Hardening", "## Hardening: ...", "# --- Hardening ---" all mark the block.
  isHardeningMarker = l: builtins.match "#[^A-Za-z]*[Hh]ardening([^A-Za-z].*)?" l != null;
  continues = l: !(isComment l) && hasSuffix "\\" l;

  # Logical lines of a unit file, trimmed, with backslash continuations joined the way systemd
  # joins them (a space in place of backslash-newline; comment lines inside are skipped).
  logicalLines =
    text:
    let
      step =
        state: raw:
        let
          l = trim raw;
        in
        if state.pending != null then
          if isComment l then
            state
          else
            let
              joined = "${state.pending} ${l}";
            in
            if hasSuffix "\\" l then
              state // { pending = trim (removeSuffix "\\" joined); }
            else
              {
                done = state.done ++ [ joined ];
                pending = null;
              }
        else if continues l then
          state // { pending = trim (removeSuffix "\\" l); }
        else
          state // { done = state.done ++ [ l ]; };
      final = foldl' step {
        done = [ ];
        pending = null;
      } (splitString "\n" text);
    in
    final.done ++ optional (final.pending != null) final.pending;

  # The directives between the first "# Hardening" comment in [Service] and the next section.
  hardeningLines =
    source: lines:
    let
      # Each line with its position and the section it is in.
      located =
        (foldl' (
          acc: l:
          let
            section = if isSectionHeader l then l else acc.section;
          in
          {
            inherit section;
            i = acc.i + 1;
            out = acc.out ++ [ { inherit l section; inherit (acc) i; } ];
          }
        ) {
          section = null;
          i = 0;
          out = [ ];
        } lines).out;
      markers = filter (x: isHardeningMarker x.l) located;
      marker = findFirst (x: x.section == "[Service]") null markers;
      block = filter (x: x.i > marker.i && x.section == "[Service]") located;
      # Up to the next section header, even if it is another [Service].
      end = findFirst (x: x.i > marker.i && isSectionHeader x.l) null located;
      inBlock = x: end == null || x.i < end.i;
    in
    if markers == [ ] then
      throw "${source}: no '# Hardening' comment; the Turret module reads its hardening directives from the lines under it"
    else if marker == null then
      throw "${source}: the '# Hardening' comment must be in the [Service] section"
    else
      filter (l: l != "" && !(isComment l)) (map (x: x.l) (filter inBlock block));

  parseDirective =
    source: l:
    let
      m = builtins.match "([A-Za-z][A-Za-z0-9]*)[[:space:]]*=[[:space:]]*(.*)" l;
    in
    if m == null then
      throw "${source}: cannot read '${l}' under '# Hardening' as a Key=Value directive"
    else
      {
        name = head m;
        value = builtins.elemAt m 1;
      };

  # Directives grouped by key, in file order within a key: repeated keys (SystemCallFilter=) and
  # empty assignments that reset a list (CapabilityBoundingSet=) keep their meaning.
  groupDirectives = foldl' (
    acc: d: acc // { ${d.name} = (acc.${d.name} or [ ]) ++ [ d.value ]; }
  ) { };
in
rec {
  /**
    The hardening directives of a unit file's text, as a systemd `serviceConfig` attribute set.

    Reads the `[Service]` lines after the first `# Hardening` comment up to the next section
    header; comments, blank lines and continuation lines are handled as systemd handles them.
    A key given once maps to a string, a repeated key to the list of its values in order.
  */
  parseHardening =
    source: text:
    let
      directives = map (parseDirective source) (hardeningLines source (logicalLines text));
      grouped = groupDirectives directives;
    in
    mapAttrs (_: values: if length values == 1 then head values else values) grouped;

  /** `parseHardening` of the unit file at `path`, read at evaluation time. */
  hardeningFromFile = path: parseHardening (toString path) (builtins.readFile path);

  /** `value` with every null attribute and list element removed, recursively. */
  stripNulls =
    value:
    if isAttrs value && !(isDerivation value) then
      mapAttrs (_: stripNulls) (filterAttrs (_: v: v != null) value)
    else if isList value then
      map stripNulls (filter (v: v != null) value)
    else
      value;

  /** An option path for messages: `showOption` of `loc`, then `[N]`-style list positions. */
  showPath = loc: suffix: showOption loc + suffix;

  /**
    Every credential name that `settings` references, each as `{ name; option; }` where `option`
    is the full option path that names it. Shapes that are not understood are skipped: the
    build-time `turret check-config` reports them.
  */
  credentialReferences =
    prefix: settings:
    let
      at = path: showOption (prefix ++ path);
      # The keys of a `providers:` entry that name a credential (each provider type's).
      providerCredentialKeys = [
        "private_key"
        "role_id"
        "secret_id"
        "token"
        "access_key_id"
        "secret_access_key"
      ];
      ref = path: name: optional (isString name) { inherit name; option = at path; };
      valueRef =
        path: v: optional (isAttrs v && isString (v.credential or null)) {
          name = v.credential;
          option = at (path ++ [ "credential" ]);
        };
      auth =
        svc: a:
        let
          p = [ "services" svc "auth" ];
        in
        if !(isAttrs a) then
          [ ]
        else
          ref (p ++ [ "bearer" ]) (a.bearer or null)
          ++ ref (p ++ [ "header" "value" ]) (a.header.value or null)
          ++ ref (p ++ [ "query" "value" ]) (a.query.value or null)
          ++ concatMap (
            kind:
            concatMap (k: valueRef (p ++ [ kind k ]) (a.${kind}.${k} or null)) [
              "username"
              "password"
            ]
          ) [
            "basic"
            "login"
          ];
    in
    concatMap (x: x) (mapAttrsToList (svc: s: auth svc (s.auth or null)) (settings.services or { }))
    ++ concatMap (x: x) (
      mapAttrsToList (
        agent: a: ref [ "agents" agent "token_credential" ] (a.token_credential or null)
      ) (settings.agents or { })
    )
    ++ ref [ "audit" "params_key" ] ((settings.audit or { }).params_key or null)
    ++ ref [ "audit" "chain_key" ] ((settings.audit or { }).chain_key or null)
    ++ concatMap (x: x) (
      mapAttrsToList (
        provider: p:
        concatMap (key: ref [ "providers" provider key ] (p.${key} or null)) providerCredentialKeys
      ) (settings.providers or { })
    );

  /** Grants that name a service `settings` does not define: `{ option; service; }` each. */
  unknownGrantServices =
    prefix: settings:
    let
      services = settings.services or { };
      grants =
        agent: a:
        imap0 (i: g: {
          option = showPath (prefix ++ [ "agents" agent "proxy" ]) "[${toString i}].service";
          service = g.service or null;
        }) (a.proxy or [ ]);
    in
    filter (g: isString g.service && !(services ? ${g.service})) (
      concatMap (x: x) (mapAttrsToList grants (settings.agents or { }))
    );

  /** The `ListenStream=` value for a Turret `listen:` entry (`unix:/path` or `host:port`). */
  listenStream =
    address:
    if hasPrefix "unix:" address then substring 5 (stringLength address) address else address;

  /** True if a `listen:` entry is a unix socket or a TCP address on loopback. */
  isLocalListen =
    address:
    hasPrefix "unix:" address
    || builtins.match "(127[.][0-9.]+|localhost|[[]::1[]]):[0-9]+" address != null;

  /** A list of names for a message. */
  showNames = names: if names == [ ] then "(none)" else concatStringsSep ", " names;
}
