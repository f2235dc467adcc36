//! An S3-compatible server for tests: `s3s-fs` (objects as files under a
//! temporary folder, requests checked against one access key with SigV4)
//! served in-process on 127.0.0.1:0. Buckets are folders of
//! [`S3Fake::root`]; [`S3Fake::start`] creates one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// The access key the fake accepts.
pub const ACCESS_KEY: &str = "station-test-key";
/// The secret key the fake accepts.
pub const SECRET_KEY: &str = "station-test-secret";
/// The region requests are signed for.
pub const REGION: &str = "us-east-1";

/// A running fake; the server stops when this is dropped.
pub struct S3Fake {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl S3Fake {
    /// Starts a server on 127.0.0.1:0 with bucket `bucket` created.
    ///
    /// # Panics
    ///
    /// When the folder or the listening socket cannot be made (a test
    /// environment problem).
    pub async fn start(bucket: &str) -> S3Fake {
        let dir = tempfile::tempdir().expect("a temporary folder for the fake S3");
        std::fs::create_dir_all(dir.path().join(bucket)).expect("bucket folder");
        let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs opens its folder");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Fake { endpoint: format!("http://{addr}"), bucket: bucket.to_string(), dir, task }
    }

    /// The folder holding the buckets (one folder each, objects as files).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Where object `key` of the bucket is kept on disk.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.path().join(&self.bucket).join(key)
    }

    /// Every object key in the bucket, sorted (s3s-fs's own bookkeeping
    /// files, which start with `.`, left out).
    pub fn keys(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(&p, base, out);
                } else if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let base = self.dir.path().join(&self.bucket);
        let mut out = vec![];
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}

impl Drop for S3Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}
