//! Test certificates and a TLS front for the embedded broker: a private CA made by `openssl`
//! at test time (no key is committed) and a proxy that terminates TLS in front of a plain
//! listener, as a load balancer or a broker's TLS listener would.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::net::TcpListener;

/// A private certificate authority in a temporary directory.
pub struct TestCa {
    dir: PathBuf,
    /// The CA's certificate, PEM.
    pub cert_pem: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let dir =
            std::env::temp_dir().join(format!("healthplane-ca-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("CA dir");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let cert_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("CA certificate");
        TestCa { dir, cert_pem }
    }

    /// A server certificate for `dns_name`, signed by this CA: `(certificate, PKCS#8 key)`.
    pub fn issue(&self, dns_name: &str) -> (String, String) {
        let stem = uuid::Uuid::new_v4().simple().to_string();
        let (key, csr, crt, ext) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
            format!("{stem}.ext"),
        );
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName=DNS:{dns_name}\nextendedKeyUsage=serverAuth\n\
                 keyUsage=critical,digitalSignature\n"
            ),
        )
        .expect("extensions file");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={dns_name}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        (
            std::fs::read_to_string(self.dir.join(crt)).expect("certificate"),
            std::fs::read_to_string(self.dir.join(key)).expect("key"),
        )
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts TLS on `listener` with `cert_pem`/`key_pem` and forwards each connection, in clear,
/// to `upstream`. Runs until the test's runtime ends.
pub fn tls_proxy(listener: TcpListener, cert_pem: &str, key_pem: &str, upstream: String) {
    let identity =
        tokio_native_tls::native_tls::Identity::from_pkcs8(cert_pem.as_bytes(), key_pem.as_bytes())
            .expect("server identity");
    let acceptor = tokio_native_tls::TlsAcceptor::from(
        tokio_native_tls::native_tls::TlsAcceptor::new(identity).expect("TLS acceptor"),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends here.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}
