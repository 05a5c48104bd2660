//! Journey: an operator deploys a service and forgets to mount its token key. The service
//! refuses to start and says which setting is missing, instead of accepting tokens anyone can
//! mint with the public development secret.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{bin_dir, free_port};

/// Runs `binary` with `env` (and no token settings from outside); returns its exit status and
/// stderr. It must exit by itself within 30 s.
fn start_without_key(binary: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let log = std::env::temp_dir().join(format!("healthplane-nokey-{}.log", uuid::Uuid::new_v4()));
    let mut child = Command::new(bin_dir().join(binary))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("HEALTHPLANE_JWT_SECRET")
        .env_remove("HEALTHPLANE_JWT_PUBLIC_KEY_PEM")
        .env_remove("HEALTHPLANE_DEV_MODE")
        .env_remove("HEALTHPLANE_CONSISTENCY_KEY")
        .env_remove("HEALTHPLANE_AUDIT_SIGNING_KEY_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("the service starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{binary} kept running without a token key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status.code(), stderr)
}

#[test]
fn a_service_without_a_token_key_refuses_to_start_and_names_the_settings() {
    for binary in ["command-api", "query-api"] {
        let (code, stderr) = start_without_key(binary, &[]);
        assert_ne!(code, Some(0), "{binary} started without a key: {stderr}");
        assert!(
            stderr.contains("HEALTHPLANE_JWT_SECRET")
                && stderr.contains("HEALTHPLANE_JWT_PUBLIC_KEY_PEM"),
            "{binary} did not name the settings: {stderr}"
        );

        // An empty or short secret is no key either.
        for short in ["", "too-short-to-be-a-secret"] {
            let (code, stderr) = start_without_key(binary, &[("HEALTHPLANE_JWT_SECRET", short)]);
            assert_ne!(code, Some(0), "{binary} started with a short secret");
            assert!(stderr.contains("at least 32 bytes"), "{binary}: {stderr}");
        }

        // A token key without the consistency-token key shared by both APIs is not enough.
        let (code, stderr) = start_without_key(
            binary,
            &[("HEALTHPLANE_JWT_SECRET", tests::TEST_JWT_SECRET)],
        );
        assert_ne!(code, Some(0), "{binary} started without a consistency key");
        assert!(
            stderr.contains("HEALTHPLANE_CONSISTENCY_KEY"),
            "{binary} did not name the setting: {stderr}"
        );
    }

    // The query API signs every audit record: without its signing key it does not start.
    let (code, stderr) = start_without_key(
        "query-api",
        &[
            ("HEALTHPLANE_JWT_SECRET", tests::TEST_JWT_SECRET),
            ("HEALTHPLANE_CONSISTENCY_KEY", tests::TEST_CONSISTENCY_KEY),
        ],
    );
    assert_ne!(code, Some(0), "query-api started without an audit key");
    assert!(
        stderr.contains("HEALTHPLANE_AUDIT_SIGNING_KEY_FILE"),
        "query-api did not name the setting: {stderr}"
    );
}
