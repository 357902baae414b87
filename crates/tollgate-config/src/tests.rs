//! Loading: the shipped examples parse, and each kind of mistake is reported with its path.

use std::collections::HashMap;

use super::*;

const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const APP: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn demo_env() -> HashMap<String, String> {
    env(&[
        ("TOLLGATE_DEMO_SECRET", KEY),
        ("TOLLGATE_DEMO_APP_SECRET", APP),
        ("TWILIO_AUTH_TOKEN", KEY),
        ("SW_SECRET", KEY),
        ("APP_SECRET", APP),
        ("REDIS_URL", "redis://:docs-password@127.0.0.1:6379/0"),
    ])
}

fn route_toml(extra: &str) -> String {
    format!(
        r#"
[state]
backend = "memory"

[[route]]
name = "r"
path = "/hooks"
provider = "standard-webhooks"
keys = [ {{ label = "a", secret = "env:SW_SECRET" }} ]
upstream = "http://127.0.0.1:3000/"
{extra}
"#
    )
}

fn load(text: &str, e: &HashMap<String, String>) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, "t.toml", e)
}

fn errors(text: &str, e: &HashMap<String, String>) -> Vec<ConfigError> {
    load(text, e).expect_err("config should be refused").0
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tollgate.toml");
    let cfg = Config::load(&path, &demo_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(cfg.routes[0].spec.id, "standard-webhooks");
    assert_eq!(
        cfg.state,
        StateBackend::Sqlite {
            path: "tollgate-demo.db".into(),
            fsync: Fsync::Always,
        }
    );
    assert!(cfg.routes[0].app_secret.is_some());
}

/// Every ```toml block in docs/config.md is a complete config that loads (with the docs' env
/// variables set), except blocks marked ```toml,ignore (fragments).
#[test]
fn every_toml_block_in_docs_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let text = std::fs::read_to_string(path).expect("docs/config.md");
    let mut blocks = 0;
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "```toml" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let block = block.join("\n");
        Config::from_toml(&block, "docs/config.md", &demo_env())
            .unwrap_or_else(|e| panic!("docs block failed:\n{block}\n{e}"));
        blocks += 1;
    }
    assert!(
        blocks >= 2,
        "expected docs/config.md to hold complete examples, found {blocks}"
    );
}

#[test]
fn defaults_apply() {
    let cfg = load(&route_toml(""), &demo_env()).unwrap();
    let r = &cfg.routes[0];
    assert_eq!(r.settings.tolerance_secs, 300);
    assert_eq!(r.dedupe_ttl_secs, 86_400);
    assert_eq!(r.upstream_timeout_ms, 10_000);
    assert_eq!(cfg.server.max_body_bytes, 1_048_576);
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:8080");
}

#[test]
fn missing_env_secret_is_reported_with_path_and_line() {
    let e = errors(&route_toml(""), &env(&[]));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "route[0].keys[0].secret");
    assert_eq!(e[0].message, "env var SW_SECRET is not set");
    assert_eq!(e[0].line, Some(5), "line of the [[route]] table");
    assert_eq!(
        e[0].to_string(),
        "t.toml:5: route[0].keys[0].secret: env var SW_SECRET is not set"
    );
}

#[test]
fn all_errors_are_collected() {
    let text = r#"
[server]
listen = "nope"
trusted_proxies = ["10.0.0.0/33"]

[[route]]
name = "a"
path = "x"
keys = []
upstream = "ftp://x"

[[route]]
name = "b"
path = "/b"
provider = "no-such"
keys = [ { secret = "env:MISSING" } ]
upstream = "http://u/"
mode = "queue-ish"
"#;
    let paths: Vec<String> = errors(text, &env(&[]))
        .into_iter()
        .map(|e| e.path)
        .collect();
    for want in [
        "server.listen",
        "server.trusted_proxies[0]",
        "route[0].path",
        "route[0].provider",
        "route[0].keys",
        "route[0].upstream",
        "route[1].provider",
        "route[1].keys[0].secret",
        "route[1].mode",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "missing {want} in {paths:?}"
        );
    }
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    let e = errors("[server]\nlisten_addr = \"x\"\n", &demo_env());
    assert!(e[0].message.contains("listen_addr"), "{e:?}");
    assert_eq!(e[0].line, Some(2));
    let e = errors(
        &route_toml("").replace("label = \"a\"", "lable = \"a\""),
        &demo_env(),
    );
    assert!(e[0].message.contains("lable"), "{e:?}");
    // Unknown route keys are the provider's options: standard-webhooks has none.
    let e = errors(&route_toml("tolerence_secs = 5"), &demo_env());
    assert_eq!(e[0].path, "route[0] (standard-webhooks)");
    assert!(e[0].message.contains("tolerence_secs"), "{e:?}");
}

#[test]
fn inline_secrets_need_opt_in_and_never_appear_in_errors() {
    let text = route_toml("").replace("env:SW_SECRET", KEY);
    let e = errors(&text, &demo_env());
    assert_eq!(e[0].path, "route[0].keys[0].secret");
    assert!(!e[0].to_string().contains(KEY));
    let cfg = load(&format!("allow_inline_secrets = true\n{text}"), &demo_env()).unwrap();
    let lints = lints(&cfg, 0);
    assert!(
        lints.iter().any(|l| l.path == "route[0].keys[0].secret"),
        "{lints:?}"
    );
}

#[test]
fn a_bad_key_is_refused_without_echoing_it() {
    let e = errors(
        &route_toml(""),
        &env(&[("SW_SECRET", "whsec_%%%%not-base64%%%%")]),
    );
    assert_eq!(e[0].path, "route[0] (standard-webhooks)");
    assert!(!e[0].to_string().contains("not-base64"), "{e:?}");
}

#[cfg(unix)]
#[test]
fn secret_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("key");
    std::fs::write(&f, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = route_toml("").replace("env:SW_SECRET", &format!("file:{}", f.display()));
    let e = errors(&text, &env(&[]));
    assert!(
        e[0].message.contains("readable by group or others"),
        "{e:?}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = load(&text, &env(&[])).unwrap();
    // The trailing newline is not part of the key.
    assert_eq!(cfg.routes[0].keys.keys()[0].secret.expose(), KEY.as_bytes());
}

#[test]
fn env_overrides_the_file() {
    let mut e = demo_env();
    e.insert("TOLLGATE_LISTEN".into(), "127.0.0.1:1234".into());
    e.insert("TOLLGATE_ADMIN_LISTEN".into(), "127.0.0.1:1235".into());
    e.insert(
        "TOLLGATE_PUBLIC_URL".into(),
        "https://hooks.example.com/".into(),
    );
    e.insert("TOLLGATE_LOG_FORMAT".into(), "json".into());
    let cfg = load(
        &format!("[server]\nlisten = \"0.0.0.0:1\"\n{}", route_toml("")),
        &e,
    )
    .unwrap();
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:1234");
    assert_eq!(cfg.server.admin_listen.to_string(), "127.0.0.1:1235");
    assert_eq!(
        cfg.server.public_url.as_deref(),
        Some("https://hooks.example.com")
    );
    assert_eq!(cfg.server.log_format, LogFormat::Json);
}

#[test]
fn workers_come_from_the_file_or_the_environment_and_default_to_per_core() {
    let e = demo_env();
    assert_eq!(load(&route_toml(""), &e).unwrap().server.workers, 0);
    let text = format!("[server]\nworkers = 3\n{}", route_toml(""));
    assert_eq!(load(&text, &e).unwrap().server.workers, 3);
    let mut with_env = demo_env();
    with_env.insert("TOLLGATE_WORKERS".into(), "1".into());
    assert_eq!(load(&text, &with_env).unwrap().server.workers, 1);
    with_env.insert("TOLLGATE_WORKERS".into(), "two".into());
    let errs = errors(&text, &with_env);
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("TOLLGATE_WORKERS")),
        "{errs:?}"
    );
    let text = format!("[server]\nworkers = 100000\n{}", route_toml(""));
    assert!(errors(&text, &e)
        .iter()
        .any(|e| e.to_string().contains("server.workers")));
}

#[test]
fn key_times_parse_as_strings_and_toml_datetimes() {
    let text = route_toml("").replace(
        "{ label = \"a\", secret = \"env:SW_SECRET\" }",
        "{ label = \"a\", secret = \"env:SW_SECRET\", not_after = \"2026-12-31T00:00:00Z\", created = 2026-01-01 }, \
         { label = \"b\", secret = \"env:SW_SECRET\", not_after = 2027-01-01T00:00:00Z }",
    );
    let cfg = load(&text, &demo_env()).unwrap_or_else(|e| panic!("{e}"));
    let keys = cfg.routes[0].keys.keys();
    assert_eq!(keys[0].not_after, Some(1_798_675_200));
    assert_eq!(keys[1].not_after, Some(1_798_761_600));
    assert_eq!(cfg.routes[0].key_info[0].created, Some(1_767_225_600));
    let old = lints(&cfg, 1_767_225_600 + 91 * 86_400);
    assert!(
        old.iter().any(|l| l.path == "route[0].keys[0].created"),
        "{old:?}"
    );
    let bad = errors(
        &route_toml("").replace(
            "secret = \"env:SW_SECRET\"",
            "secret = \"env:SW_SECRET\", not_after = \"tomorrow\"",
        ),
        &demo_env(),
    );
    assert_eq!(bad[0].path, "route[0].keys[0].not_after");
}

#[test]
fn lints_flag_open_proxies_missing_tls_and_labels() {
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\ntrusted_proxies = [\"0.0.0.0/0\", \"::/0\"]\n{}",
        route_toml("").replace("label = \"a\", ", "")
    );
    let cfg = load(
        &text,
        &env(&[("SW_SECRET", "whsec_YWFhYWFhYWFhYWFhYWFhYQ==")]),
    )
    .unwrap();
    let paths: Vec<String> = lints(&cfg, 0).into_iter().map(|l| l.path).collect();
    for want in [
        "tls",
        "server.trusted_proxies[0]",
        "server.trusted_proxies[1]",
        "route[0].keys[0].label",
        "route[0].keys[0].secret",
        "route[0].app_secret",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "missing {want} in {paths:?}"
        );
    }
}

#[test]
fn sqlite_is_the_default_backend() {
    let cfg = load(
        &route_toml("").replace("backend = \"memory\"", ""),
        &demo_env(),
    )
    .unwrap();
    assert_eq!(
        cfg.state,
        StateBackend::Sqlite {
            path: "tollgate.db".into(),
            fsync: Fsync::Always,
        }
    );
}

#[test]
fn load_route_needs_only_that_route() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let text = format!(
        "{}\n[[route]]\nname = \"other\"\npath = \"/o\"\nprovider = \"standard-webhooks\"\nkeys = [ {{ secret = \"env:UNSET\" }} ]\nupstream = \"http://u/\"\n",
        route_toml("")
    );
    std::fs::write(&f, text).unwrap();
    let setup = load_route(&f, "r", &demo_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(setup.spec.id, "standard-webhooks");
    assert_eq!(setup.keys.keys()[0].label.as_ref(), "a");
    let e = load_route(&f, "nope", &demo_env()).unwrap_err();
    assert!(e.to_string().contains("no route named"), "{e}");
}

fn redis_toml(state: &str) -> String {
    route_toml("").replace("backend = \"memory\"", state)
}

/// The `[state]` settings of a route config whose state section is `state`, which must load
/// as Redis.
fn redis_state(state: &str, e: &HashMap<String, String>) -> RedisState {
    match load(&redis_toml(state), e)
        .unwrap_or_else(|e| panic!("{e}"))
        .state
    {
        StateBackend::Redis(redis) => redis,
        other => panic!("not redis: {other:?}"),
    }
}

#[test]
fn redis_backend_reads_its_url_from_the_environment() {
    let e = env(&[
        ("SW_SECRET", KEY),
        ("REDIS_URL", "redis://:hunter2@10.0.0.5:6379/2"),
    ]);
    let cfg = load(
        &redis_toml("backend = \"redis\"\nurl = \"env:REDIS_URL\"\noperation_timeout_ms = 250"),
        &e,
    )
    .unwrap();
    let StateBackend::Redis(redis) = &cfg.state else {
        panic!("not redis: {:?}", cfg.state);
    };
    assert_eq!(redis.url.expose(), "redis://:hunter2@10.0.0.5:6379/2");
    assert_eq!(redis.url.source(), &SecretSource::Env("REDIS_URL".into()));
    assert_eq!(redis.key_prefix, "tollgate:");
    assert_eq!(redis.connect_timeout_ms, 500);
    assert_eq!(redis.operation_timeout_ms, 250);
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://:***@10.0.0.5:6379/2"), "{shown}");
}

#[test]
fn redis_inline_url_without_password_is_fine_with_one_is_refused() {
    let redis = redis_state(
        "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379/\"\nkey_prefix = \"a:\"",
        &demo_env(),
    );
    assert_eq!(redis.url.expose(), "redis://127.0.0.1:6379/");
    assert_eq!(redis.key_prefix, "a:");

    let e = errors(
        &redis_toml("backend = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:6379/\""),
        &demo_env(),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "state.url");
    assert!(e[0].message.contains("env:NAME"), "{}", e[0].message);
    assert!(!e[0].message.contains("hunter2"));
}

#[test]
fn redis_state_mistakes_are_each_reported() {
    let e = errors(
        &redis_toml(
            "backend = \"redis\"\nkey_prefix = \"{t}:\"\npath = \"x.db\"\nconnect_timeout_ms = 0",
        ),
        &demo_env(),
    );
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "state.path",
            "state.url",
            "state.key_prefix",
            "state.connect_timeout_ms"
        ],
        "{e:?}"
    );
    for (url, why) in [
        ("env:NOPE", "env var NOPE is not set"),
        (
            "rediss://h:1/#insecure",
            "certificate checks cannot be turned off",
        ),
        ("http://h:1/", "unsupported scheme"),
        ("redis:///0", "names no host"),
        ("redis://h:port/0", "bad port"),
        ("127.0.0.1:6379", "not a URL"),
    ] {
        let e = errors(
            &redis_toml(&format!("backend = \"redis\"\nurl = \"{url}\"")),
            &demo_env(),
        );
        assert_eq!(e.len(), 1, "{url}: {e:?}");
        assert_eq!(e[0].path, "state.url");
        assert!(e[0].message.contains(why), "{url}: {}", e[0].message);
    }
    let e = errors(
        &route_toml("").replace("backend = \"memory\"", "url = \"redis://h/\""),
        &demo_env(),
    );
    assert_eq!(e[0].path, "state.url");
    assert_eq!(
        e[0].message,
        "applies only to backend = \"redis\", not \"sqlite\""
    );
}

/// A directory holding empty `ca.pem`, `client.pem` and `client.key` (loading checks that the
/// files exist; their content is checked when tollgate starts).
fn tls_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "client.pem", "client.key"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let key = dir.path().join("client.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

#[test]
fn redis_client_key_readable_by_others_is_refused() {
    let dir = tls_files();
    let key = dir.path().join("client.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let d = dir.path().display();
    let e = env(&[("SW_SECRET", KEY), ("REDIS_URL", "rediss://10.0.0.1:7000")]);
    let state = format!(
        "backend = \"redis\"\nurl = \"env:REDIS_URL\"\n\
         tls_cert = \"{d}/client.pem\"\ntls_key = \"{d}/client.key\""
    );
    let err = load(&redis_toml(&state), &e).unwrap_err().to_string();
    assert!(
        err.contains("state.tls_key") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn redis_tls_and_cluster_keys_are_read() {
    let dir = tls_files();
    let d = dir.path().display();
    let e = env(&[
        ("SW_SECRET", KEY),
        ("REDIS_URL", "rediss://app:hunter2@10.0.0.1:7000"),
    ]);
    let state = format!(
        "backend = \"redis\"\nurl = \"env:REDIS_URL\"\ncluster = true\n\
         cluster_nodes = [\"10.0.0.2:7000\", \"[fd00::3]:7001\", \"redis-4.internal:7002\"]\n\
         tls_ca = \"{d}/ca.pem\"\ntls_cert = \"{d}/client.pem\"\ntls_key = \"{d}/client.key\""
    );
    let cfg = load(&redis_toml(&state), &e).unwrap_or_else(|e| panic!("{e}"));
    let StateBackend::Redis(redis) = &cfg.state else {
        panic!("not redis: {:?}", cfg.state);
    };
    assert!(redis.url.is_tls() && redis.url.has_password());
    assert_eq!(redis.url.host(), "10.0.0.1");
    assert!(redis.cluster);
    assert_eq!(
        redis.cluster_nodes,
        [
            ("10.0.0.2".to_owned(), 7000),
            ("fd00::3".to_owned(), 7001),
            ("redis-4.internal".to_owned(), 7002)
        ]
    );
    assert_eq!(redis.tls.ca, Some(dir.path().join("ca.pem")));
    assert_eq!(
        redis.tls.client,
        Some((dir.path().join("client.pem"), dir.path().join("client.key")))
    );
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("rediss://app:***@10.0.0.1:7000"), "{shown}");
    // TLS without a private CA trusts the system's roots; one node is the default.
    let redis = redis_state(
        "backend = \"redis\"\nurl = \"rediss://10.0.0.1:6380/3\"",
        &demo_env(),
    );
    assert!(!redis.cluster && redis.cluster_nodes.is_empty());
    assert_eq!(redis.tls, RedisTlsFiles::default());
}

#[test]
fn redis_tls_and_cluster_mistakes_name_their_key() {
    let dir = tls_files();
    let d = dir.path().display();
    let cases = [
        (
            format!("url = \"redis://h:1/\"\ntls_ca = \"{d}/ca.pem\""),
            "state.tls_ca",
            "needs a rediss:// URL",
        ),
        (
            format!("url = \"rediss://h:1/\"\ntls_cert = \"{d}/client.pem\""),
            "state.tls_cert",
            "needs tls_key as well",
        ),
        (
            format!("url = \"rediss://h:1/\"\ntls_key = \"{d}/client.key\""),
            "state.tls_key",
            "needs tls_cert as well",
        ),
        (
            format!("url = \"rediss://h:1/\"\ntls_ca = \"{d}/missing.pem\""),
            "state.tls_ca",
            "missing.pem",
        ),
        (
            format!("url = \"rediss://h:1/\"\ntls_ca = \"{d}\""),
            "state.tls_ca",
            "is not a file",
        ),
        (
            "url = \"redis://h:1/\"\ncluster_nodes = [\"h2:1\"]".to_owned(),
            "state.cluster_nodes",
            "only with cluster = true",
        ),
        (
            "url = \"redis://h:1/2\"\ncluster = true".to_owned(),
            "state.url",
            "only database 0",
        ),
    ];
    for (state, path, why) in cases {
        let e = errors(
            &redis_toml(&format!("backend = \"redis\"\n{state}")),
            &demo_env(),
        );
        assert_eq!(e.len(), 1, "{state}: {e:?}");
        assert_eq!(e[0].path, path, "{state}");
        assert!(e[0].message.contains(why), "{state}: {}", e[0].message);
    }
    let e = errors(
        &redis_toml(
            "backend = \"redis\"\nurl = \"redis://h:1/\"\ncluster = true\n\
             cluster_nodes = [\"h2\", \"h2:0\", \"h2:x\", \"u:p@h2:1\", \":1\", \"h2:1\"]",
        ),
        &demo_env(),
    );
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        (0..5)
            .map(|i| format!("state.cluster_nodes[{i}]"))
            .collect::<Vec<_>>(),
        "{e:?}"
    );
    let e = errors(
        &route_toml("").replace(
            "backend = \"memory\"",
            &format!("tls_ca = \"{d}/ca.pem\"\ncluster = true"),
        ),
        &demo_env(),
    );
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["state.cluster", "state.tls_ca"], "{e:?}");
}

#[test]
fn a_redis_password_sent_in_clear_text_to_another_host_is_warned_about() {
    let warned = |url: &str, extra: &str| {
        let e = env(&[("SW_SECRET", KEY), ("REDIS_URL", url)]);
        let state = format!("backend = \"redis\"\nurl = \"env:REDIS_URL\"\n{extra}");
        let cfg = load(&redis_toml(&state), &e).unwrap_or_else(|e| panic!("{e}"));
        let lints: Vec<Lint> = lints(&cfg, 0)
            .into_iter()
            .filter(|l| l.path == "state.url")
            .collect();
        for l in &lints {
            assert!(!l.message.contains("pw"), "{l}");
        }
        lints.first().map(|l| l.message.clone())
    };
    let w = warned("redis://:pw@10.0.0.5:6379/0", "").unwrap();
    assert!(w.contains("10.0.0.5") && w.contains("rediss://"), "{w}");
    assert!(warned("redis://app:pw@redis.internal:6379", "").is_some());
    assert!(warned(
        "redis://:pw@127.0.0.1:7000",
        "cluster = true\ncluster_nodes = [\"10.0.0.6:7000\"]"
    )
    .is_some_and(|w| w.contains("10.0.0.6")));
    assert_eq!(warned("rediss://:pw@10.0.0.5:6379/0", ""), None);
    assert_eq!(warned("redis://10.0.0.5:6379/0", ""), None);
    for local in ["127.0.0.1", "localhost", "[::1]"] {
        assert_eq!(warned(&format!("redis://:pw@{local}:6379/0"), ""), None);
    }
}

#[test]
fn queue_mode_defaults() {
    let cfg = load(&route_toml("mode = \"queue\""), &demo_env()).unwrap_or_else(|e| panic!("{e}"));
    let r = &cfg.routes[0];
    assert_eq!(r.mode, Mode::Queue);
    assert_eq!(
        r.queue,
        Some(QueueSettings {
            response: StaticResponse {
                status: 200,
                content_type: None,
                body: String::new(),
            },
            max_attempts: 10,
            max_age_secs: 86_400,
            concurrency: 8,
            order_key: None,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
            dead_letter_on_4xx: true,
            breaker_failures: 5,
            breaker_probe_ms: 5_000,
        })
    );
}

#[test]
fn queue_mode_keys_are_read() {
    let cfg = load(
        &route_toml(
            r#"mode = "queue"
response = { status = 204, content_type = "text/xml", body = "<Response/>" }
max_attempts = 3
max_age_secs = 60
concurrency = 2
order_key = "CallSid"
retry_initial_ms = 50
retry_max_ms = 400
dead_letter_on_4xx = false
breaker_failures = 0
breaker_probe_ms = 100"#,
        ),
        &demo_env(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let q = cfg.routes[0].queue.clone().expect("queue settings");
    assert_eq!(q.response.status, 204);
    assert_eq!(q.response.content_type.as_deref(), Some("text/xml"));
    assert_eq!(q.response.body, "<Response/>");
    assert_eq!((q.max_attempts, q.max_age_secs, q.concurrency), (3, 60, 2));
    assert_eq!(q.order_key.as_deref(), Some("CallSid"));
    assert_eq!((q.retry_initial_ms, q.retry_max_ms), (50, 400));
    assert!(!q.dead_letter_on_4xx);
    assert_eq!((q.breaker_failures, q.breaker_probe_ms), (0, 100));
}

#[test]
fn queue_keys_on_a_proxy_route_and_bad_values_are_refused() {
    let e = errors(&route_toml("max_attempts = 3"), &demo_env());
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "route[0].max_attempts");
    assert_eq!(e[0].message, "only applies to mode = \"queue\"");
    let e = errors(
        &route_toml(
            "mode = \"queue\"\nresponse = { status = 500 }\nconcurrency = 0\nmax_attempts = 0\nretry_initial_ms = 10\nretry_max_ms = 5\norder_key = \"\"",
        ),
        &demo_env(),
    );
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "route[0].response.status",
            "route[0].max_attempts",
            "route[0].concurrency",
            "route[0].order_key",
            "route[0].retry_max_ms",
        ]
    );
    let e = errors(
        &route_toml("mode = \"queue\"\nresponse = { stauts = 200 }"),
        &demo_env(),
    );
    assert!(e[0].message.contains("stauts"), "{e:?}");
}

#[test]
fn load_state_reads_state_without_route_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.toml");
    std::fs::write(
        &f,
        "[state]\npath = \"/var/lib/x.db\"\nfsync = \"batch\"\n[[route]]\nname = \"r\"\nkeys = [ { secret = \"env:NOT_SET_ANYWHERE\" } ]\n",
    )
    .unwrap();
    assert_eq!(
        load_state(&f, &demo_env()).unwrap(),
        StateBackend::Sqlite {
            path: "/var/lib/x.db".into(),
            fsync: Fsync::Batch
        }
    );
}
