//! The gateway. (Being written.)
//!
//! TEMPORARY STUB on branch `cli` only, so the CLI compiles and its process
//! behaviour (listening lines, signals, exit codes) can be tested before the
//! real gateway lands. Binds the listen addresses and forwards nothing. On a
//! merge conflict, take the gateway branch's version of this file.

use std::net::SocketAddr;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

pub struct Gateway {
    addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for a in config.listen() {
            let l = tokio::net::TcpListener::bind(a.as_str())
                .await
                .map_err(|source| GatewayError::Listen { addr: a.clone(), source })?;
            addrs.push(l.local_addr().expect("bound"));
            tasks.push(tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            }));
        }
        Ok(Gateway { addrs, tasks })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    pub async fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}
