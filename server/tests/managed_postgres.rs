//! The embedded default database, through the real binary: first run initialises, a second run
//! reuses, a concurrent second `serve` is refused, shutdown leaves no postgres behind, and a
//! `kill -9` of the server is recovered from. Also the `user` and `migrate` commands.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lora-pipeline");

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lp-managed-")
        .tempdir()
        .unwrap();
    // As root the cluster runs as the postgres user, which must be able to enter the folder.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn command(data: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("DATABASE_URL")
        .env("DATA_DIR", data.join("data"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .current_dir(data);
    command
}

struct Server {
    child: Child,
    port: u16,
    log: Vec<String>,
}

/// Starts `serve` on a free port and waits for its "listening" line.
fn serve(data: &Path) -> Server {
    let mut child = command(data)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        log.push(line.clone());
        if line.contains("\"listening\"") {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let addr = value["addr"].as_str().unwrap();
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Server { child, port, log };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not start:\n{}", log.join("\n"));
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response)
}

fn terminate(server: &mut Server) {
    unsafe_free_kill(server.child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("serve did not stop on SIGTERM");
}

fn unsafe_free_kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// postgres processes whose command line names this data directory.
fn postgres_processes(data: &Path) -> Vec<String> {
    let needle = data.join("data/postgres").display().to_string();
    let output = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(&needle) && l.contains("postgres"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn managed_cluster_lifecycle() {
    let dir = data_dir();
    let data = dir.path();

    // First run: initialises the cluster and serves a ready app.
    let mut first = serve(data);
    assert!(
        first
            .log
            .iter()
            .any(|l| l.contains("initialising the managed PostgreSQL cluster"))
    );
    assert!(data.join("data/postgres/PG_VERSION").exists());
    let (status, body) = get(first.port, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"migrations\":\"current\""));
    // No TCP port is opened by the cluster: only the private socket.
    let conf = std::fs::read_to_string(data.join("data/postgres/postmaster.pid")).unwrap();
    assert!(conf.contains(&data.join("data/run").display().to_string()));

    // The socket asks every connection for a password, kept in a file only the server's user
    // can read: a local process that reaches the socket (a worker) cannot log in with none.
    let secret = data.join("data/postgres.secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secrets = std::fs::read_to_string(&secret).unwrap();
    let psql = |role: &str, password: Option<&str>| {
        let mut command = Command::new("psql");
        command
            .args(["-h", &data.join("data/run").display().to_string()])
            .args([
                "-p", "5432", "-U", role, "-d", "postgres", "-w", "-Atc", "SELECT 1",
            ])
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        command.output().unwrap()
    };
    for role in ["postgres", "lora_app"] {
        let refused = psql(role, None);
        assert!(!refused.status.success(), "{role} without a password");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("password"), "{stderr}");
        let password = secrets
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{role}=")))
            .unwrap();
        assert!(!psql(role, Some("guess")).status.success());
        let allowed = psql(role, Some(password));
        assert!(
            allowed.status.success(),
            "{role}: {}",
            String::from_utf8_lossy(&allowed.stderr)
        );
    }

    // A concurrent second serve on the same DATA_DIR is refused with a clear message.
    let second = command(data)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is in use by another lora-pipeline process"),
        "{stderr}"
    );
    assert_eq!(
        get(first.port, "/readyz").0,
        200,
        "the first server is unharmed"
    );

    // Account commands work while serve runs (they use its socket).
    let mut create = command(data)
        .args(["user", "create", "--email", "ops@example.com"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let created = create.wait_with_output().unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let list = command(data).args(["user", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("ops@example.com") && listed.contains("active"),
        "{listed}"
    );

    // Graceful shutdown stops postgres too.
    terminate(&mut first);
    assert!(
        postgres_processes(data).is_empty(),
        "{:?}",
        postgres_processes(data)
    );

    // One-off commands start and stop the cluster themselves when no serve runs.
    let disable = command(data)
        .args(["user", "disable", "--email", "ops@example.com"])
        .output()
        .unwrap();
    assert!(
        disable.status.success(),
        "{}",
        String::from_utf8_lossy(&disable.stderr)
    );
    let list = command(data).args(["user", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("disabled"));
    let migrate = command(data).arg("migrate").output().unwrap();
    assert!(migrate.status.success());
    assert!(postgres_processes(data).is_empty());

    // Second run reuses the cluster (no initdb) and keeps the data.
    let mut again = serve(data);
    assert!(!again.log.iter().any(|l| l.contains("initialising")));
    assert_eq!(get(again.port, "/readyz").0, 200);

    // kill -9 leaves postgres orphaned; the next serve takes over cleanly.
    unsafe_free_kill(again.child.id(), "KILL");
    let _ = again.child.wait();
    assert!(
        !postgres_processes(data).is_empty(),
        "postgres outlives a SIGKILLed server"
    );
    let mut recovered = serve(data);
    assert!(
        recovered
            .log
            .iter()
            .any(|l| l.contains("left running by a previous process"))
    );
    assert_eq!(get(recovered.port, "/readyz").0, 200);
    let list = command(data).args(["user", "list"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("ops@example.com"),
        "data survived"
    );
    terminate(&mut recovered);
    assert!(postgres_processes(data).is_empty());
}

#[test]
fn bad_configuration_is_explained() {
    let dir = data_dir();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (
            &["serve", "--bind", "nonsense"],
            &[],
            "BIND_ADDR must be host:port",
        ),
        (
            &["serve", "--public-url", "ftp://x"],
            &[],
            "PUBLIC_URL must start with http",
        ),
        (
            &["migrate"],
            &[("DATABASE_URL", "mysql://x")],
            "DATABASE_URL must be a PostgreSQL URL",
        ),
    ];
    for (args, env, expected) in cases {
        let output = command(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
