//! Grants and their absence: directories (and the escape routes out of
//! them), environment (see run.rs), network.

use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;

use crate::support::Tern;
use test_programs::*;

const SECRET: &str = "top secret outside the preopen";

/// A host layout: `root/secret.txt` outside, `root/data/` to be granted.
fn layout() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("secret.txt"), SECRET).unwrap();
    fs::create_dir(root.path().join("data")).unwrap();
    fs::write(root.path().join("data/note.txt"), "granted note").unwrap();
    root
}

#[test]
pub fn fs() {
    let tern = Tern::new();
    let root = layout();
    let data = root.path().join("data");
    let grant = format!("{}::/data", data.display());
    for program in [P1_FS, P2_FS] {
        // No grant: nothing is visible.
        let out = tern.run(&["run", program, "read", "/data/note.txt"]);
        out.code(1);
        assert!(out.stdout.starts_with("error: "), "{out:?}");

        tern.run(&["run", "--dir", &grant, program, "read", "/data/note.txt"])
            .code(0)
            .stdout("granted note");
        tern.run(&["run", "--dir", &grant, program, "ls", "/data"])
            .code(0)
            .stdout("note.txt\n");
        tern.run(&[
            "run",
            "--dir",
            &grant,
            program,
            "write",
            "/data/out.txt",
            "written by guest",
        ])
        .code(0)
        .stdout("wrote /data/out.txt\n");
        assert_eq!(
            fs::read_to_string(data.join("out.txt")).unwrap(),
            "written by guest"
        );
        fs::remove_file(data.join("out.txt")).unwrap();

        // `--dir DIR` means DIR::DIR.
        let same = data.display().to_string();
        tern.run(&[
            "run",
            "--dir",
            &same,
            program,
            "read",
            &format!("{same}/note.txt"),
        ])
        .code(0)
        .stdout("granted note");
    }
}

#[test]
fn read_only_dir_refuses_writes() {
    let tern = Tern::new();
    let root = layout();
    let grant = format!("{}::/data", root.path().join("data").display());
    for program in [P1_FS, P2_FS] {
        tern.run(&["run", "--dir-ro", &grant, program, "read", "/data/note.txt"])
            .code(0)
            .stdout("granted note");
        let out = tern.run(&[
            "run",
            "--dir-ro",
            &grant,
            program,
            "write",
            "/data/note.txt",
            "overwritten",
        ]);
        out.code(1);
        assert!(out.stdout.starts_with("error: "), "{out:?}");
        assert_eq!(
            fs::read_to_string(root.path().join("data/note.txt")).unwrap(),
            "granted note"
        );
    }
}

#[test]
fn escapes_from_a_preopen_fail() {
    let tern = Tern::new();
    let root = layout();
    let data = root.path().join("data");
    std::os::unix::fs::symlink(root.path().join("secret.txt"), data.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", data.join("rel-link")).unwrap();
    let grant = format!("{}::/data", data.display());
    let secret_host_path = root.path().join("secret.txt").display().to_string();
    for program in [P1_FS, P2_FS] {
        for path in [
            "/data/../secret.txt",
            "/data/abs-link",
            "/data/rel-link",
            &secret_host_path,
            "/etc/passwd",
        ] {
            let out = tern.run(&["run", "--dir", &grant, program, "read", path]);
            out.code(1);
            assert!(
                out.stdout.starts_with("error: ") && !out.stdout.contains(SECRET),
                "{path}: {out:?}"
            );
        }
        // Writing through `..` must not create anything outside either.
        tern.run(&[
            "run",
            "--dir",
            &grant,
            program,
            "write",
            "/data/../planted.txt",
            "x",
        ])
        .code(1);
        assert!(!root.path().join("planted.txt").exists());
    }
}

#[test]
fn symlinks_may_not_point_out_of_a_preopen() {
    let tern = Tern::new();
    let root = layout();
    let data = root.path().join("data");
    fs::create_dir(data.join("sub")).unwrap();
    let grant = format!("{}::/data", data.display());
    let secret = root.path().join("secret.txt").display().to_string();
    for program in [P1_FS, P2_FS] {
        // Out of the preopen, relative or absolute: refused. So is any `..`,
        // even one that stays inside: renaming the link would lead it out.
        for (target, link) in [
            ("../secret.txt", "/data/up"),
            ("../../../../../../../../../../etc/passwd", "/data/far"),
            ("sub/../../secret.txt", "/data/zigzag"),
            (secret.as_str(), "/data/absolute"),
            ("/etc/passwd", "/data/etc"),
            ("../note.txt", "/data/sub/sibling"),
        ] {
            tern.run(&["run", "--dir", &grant, program, "symlink", target, link])
                .code(1)
                .stdout("error: PermissionDenied\n");
        }
        // Nothing was made on the host.
        assert_eq!(names(root.path()), ["data", "secret.txt"]);
        assert_eq!(names(&data), ["note.txt", "sub"]);
        assert!(names(&data.join("sub")).is_empty());

        // A link to something below its own directory is made, and works.
        tern.run(&[
            "run",
            "--dir",
            &grant,
            program,
            "symlink",
            "note.txt",
            "/data/link",
        ])
        .code(0)
        .stdout("linked /data/link -> note.txt\n");
        assert_eq!(
            fs::read_link(data.join("link")).unwrap(),
            Path::new("note.txt")
        );
        tern.run(&["run", "--dir", &grant, program, "read", "/data/link"])
            .code(0)
            .stdout("granted note");
        fs::remove_file(data.join("link")).unwrap();
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A listener whose backlog tells whether anyone connected.
pub(crate) fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

pub(crate) fn accepted(listener: &TcpListener) -> usize {
    std::iter::from_fn(|| listener.accept().ok()).count()
}

#[test]
pub fn net_connect() {
    let tern = Tern::new();
    let (listener, addr) = listener();
    let port = addr.rsplit_once(':').unwrap().1;

    // No grant: the connect fails in the guest and never reaches the host.
    let out = tern.run(&["run", P2_NET_CONNECT, &addr]);
    out.code(1);
    assert!(out.stdout.starts_with("error: "), "{out:?}");
    assert_eq!(
        accepted(&listener),
        0,
        "a denied connect reached the listener"
    );

    // A grant for another port does not cover this one.
    tern.run(&["run", "--allow-net", "127.0.0.1:1", P2_NET_CONNECT, &addr])
        .code(1);
    assert_eq!(accepted(&listener), 0);

    // Granted, by exact address and by wildcard.
    for grant in [addr.as_str(), &format!("*:{port}"), "127.0.0.1:*"] {
        tern.run(&["run", "--allow-net", grant, P2_NET_CONNECT, &addr])
            .code(0)
            .stdout("connected\n");
        listener.set_nonblocking(false).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ping");
        listener.set_nonblocking(true).unwrap();
    }

    // Name lookup is part of the grant: without one, `localhost` does not
    // even resolve; with one for localhost, it resolves and connects.
    let by_name = format!("localhost:{port}");
    tern.run(&["run", P2_NET_CONNECT, &by_name]).code(1);
    assert_eq!(accepted(&listener), 0);
    tern.run(&["run", "--allow-net", &by_name, P2_NET_CONNECT, &by_name])
        .code(0)
        .stdout("connected\n");
    assert_eq!(accepted(&listener), 1);

    // WASI preview 1 has no way to open a socket at all.
    let out = tern.run(&["run", "--allow-net", &addr, P1_NET_CONNECT, &addr]);
    out.code(1);
    assert_eq!(accepted(&listener), 0);
}

#[test]
fn bad_grants_are_usage_errors() {
    let tern = Tern::new();
    let out = tern.run(&["run", "--allow-net", "localhost", P1_HELLO]);
    out.code(2);
    assert!(
        out.stderr.contains("invalid network grant `localhost`"),
        "{out:?}"
    );
    tern.run(&["run", "--dir", "/no/such/dir::/x", P1_HELLO])
        .code(1)
        .one_line_error("cannot open directory `/no/such/dir` for --dir");
}
