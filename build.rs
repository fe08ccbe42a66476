//! Probes for the external programs the integration tests run (`redis-server`, `haproxy`,
//! `prometheus`, ...) and emits one `have_<tool>` cfg for each one found. A test that needs
//! a missing tool carries `#[cfg_attr(not(have_<tool>), ignore = "<tool> not installed")]`,
//! so nextest reports it as skipped instead of letting it pass without testing anything.
//! Nothing here affects the binary: the library and the daemon never read these cfgs.
//!
//! `REDIS_CANARY_REQUIRE_TOOLS=1` (scripts/test sets it in CI) turns a missing tool into a
//! build error, so that nothing is ever skipped where everything is supposed to be installed.

use std::path::{Path, PathBuf};

/// (cfg name, environment variable that overrides the program, program names on PATH).
const TOOLS: &[(&str, Option<&str>, &[&str])] = &[
    (
        "have_redis_server",
        Some("REDIS_SERVER_BIN"),
        &["redis-server"],
    ),
    (
        "have_redis_sentinel",
        Some("REDIS_SENTINEL_BIN"),
        &["redis-sentinel"],
    ),
    // tests/cluster.rs: `redis-cli --cluster create` makes the cluster.
    ("have_redis_cli", Some("REDIS_CLI_BIN"), &["redis-cli"]),
    ("have_haproxy", None, &["haproxy"]),
    ("have_prometheus", Some("PROMETHEUS_BIN"), &["prometheus"]),
    ("have_promtool", None, &["promtool"]),
    (
        "have_alertmanager",
        Some("ALERTMANAGER_BIN"),
        &["prometheus-alertmanager"],
    ),
    ("have_kubectl", None, &["kubectl"]),
    ("have_openssl", None, &["openssl"]),
    // tests/dns.rs: a network namespace with a resolver that never answers.
    ("have_ip", None, &["ip"]),
    ("have_python3", None, &["python3"]),
    // tests/discovery.rs: a DNS server on loopback. Debian installs it in /usr/sbin, which a
    // user's PATH may lack: an absolute name is taken as it is (`Path::join` replaces).
    (
        "have_dnsmasq",
        Some("DNSMASQ_BIN"),
        &["dnsmasq", "/usr/sbin/dnsmasq"],
    ),
    // tests/browser.rs: the status page and the HTML soak report in a real browser.
    (
        "have_chromium",
        Some("CHROMIUM_BIN"),
        &["chromium", "chromium-browser"],
    ),
    (
        "have_chromedriver",
        Some("CHROMEDRIVER_BIN"),
        &["chromedriver"],
    ),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for var in [
        "PATH",
        "REDIS_CANARY_REQUIRE_TOOLS",
        "KUBERNETES_VALIDATE",
        "XDG_DATA_HOME",
        "HOME",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut missing = Vec::new();
    let mut probe = |cfg: &str, found: Option<PathBuf>, what: &str| {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        match found {
            Some(_) => println!("cargo::rustc-cfg={cfg}"),
            None => missing.push(what.to_string()),
        }
    };
    for (cfg, env, names) in TOOLS {
        if let Some(var) = env {
            println!("cargo::rerun-if-env-changed={var}");
        }
        let found = env
            .and_then(std::env::var_os)
            .map(PathBuf::from)
            .and_then(|p| {
                if p.components().count() > 1 {
                    p.is_file().then_some(p)
                } else {
                    find_on_path(&path_dirs, &p.to_string_lossy())
                }
            })
            .or_else(|| names.iter().find_map(|n| find_on_path(&path_dirs, n)));
        probe(cfg, found, names[0]);
    }
    probe(
        "have_kubernetes_validate",
        kubernetes_validate(&path_dirs),
        "kubernetes-validate",
    );

    // Not a tool: tests that need root (network namespaces) are skipped without it, and
    // never fail the build, since CI may run unprivileged.
    println!("cargo::rustc-check-cfg=cfg(is_root)");
    if running_as_root() {
        println!("cargo::rustc-cfg=is_root");
    }

    if !missing.is_empty() {
        if std::env::var_os("REDIS_CANARY_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0")
        {
            panic!(
                "REDIS_CANARY_REQUIRE_TOOLS is set and these test tools are missing: {} \
                 (scripts/install-deps installs them)",
                missing.join(", ")
            );
        }
        println!(
            "cargo::warning=tests that need {} will be skipped (not installed; scripts/install-deps)",
            missing.join(", ")
        );
        // Probe again once something is installed: a new program changes its directory.
        for dir in path_dirs.iter().filter(|d| d.is_absolute() && d.is_dir()) {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
}

/// Whether this build (and so, in practice, the tests it builds) runs as root: the
/// effective uid in `/proc/self/status` is 0.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn find_on_path(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where tests/observability.rs looks for `kubernetes-validate`: `KUBERNETES_VALIDATE`, the
/// virtualenv scripts/install-deps creates, or PATH.
fn kubernetes_validate(path_dirs: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(p)).filter(|p| is_executable(p));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    let venv = data.map(|d| d.join("redis-canary/venv/bin/kubernetes-validate"));
    let found = venv.filter(|p| is_executable(p));
    if let Some(venv) = &found {
        // Rerun if it goes away (a missing file would rerun the probe on every build).
        println!("cargo::rerun-if-changed={}", venv.display());
    }
    found.or_else(|| find_on_path(path_dirs, "kubernetes-validate"))
}
