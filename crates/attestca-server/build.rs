//! Tells the integration tests which outside components this build can reach, so that a test
//! needing a missing one is *ignored with the reason* instead of passing without testing
//! anything. Under `ATTESTCA_TEST_REQUIRE_ALL=1` (what `tests/run.sh` and CI set) nothing is
//! ignored: a missing component fails the test that needs it.
//!
//! Each component is named by the variable `tests/run.sh` exports for it; a test carries
//! `#[cfg_attr(missing_<name>, ignore = "…")]`.

/// (cfg suffix, environment variable naming the component).
const COMPONENTS: &[(&str, &str)] = &[
    ("postgres", "ATTESTCA_TEST_DATABASE_URL"),
    ("postgres_server", "ATTESTCA_TEST_PG_BIN"),
    ("softhsm", "ATTESTCA_TEST_PKCS11_MODULE"),
    ("pkilint", "ATTESTCA_TEST_PKILINT"),
    ("promtool", "ATTESTCA_TEST_PROMTOOL"),
    ("openapi_validator", "ATTESTCA_TEST_OPENAPI_SPEC_VALIDATOR"),
    ("vectors", "ATTESTCA_VECTORS_DIR"),
    ("swtpm", "ATTESTCA_TEST_SWTPM"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=ATTESTCA_TEST_REQUIRE_ALL");
    println!("cargo::rerun-if-env-changed=CI");
    let require_all = set("ATTESTCA_TEST_REQUIRE_ALL") || set("CI");
    for (name, var) in COMPONENTS {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg(missing_{name})");
        let present = set(var) || (*name == "vectors" && default_vectors());
        if !(require_all || present) {
            println!("cargo::rustc-cfg=missing_{name}");
        }
    }
}

fn set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// `../shared/vectors` beside the checkout, where the tests look when the variable is unset.
fn default_vectors() -> bool {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
    std::path::Path::new(&manifest)
        .join("../../../shared/vectors")
        .is_dir()
}
