//! MultiClient (§9): `n` sub-clients `__i__.<base>` with the same key, each
//! with its own discovery and WebSocket. A send goes out on every ready
//! sub-client `i` to the peer's sub-client `__i__` with one message ID;
//! arrivals are deduplicated by message ID (SESSION payloads never are),
//! and the first answer on any sub-client resolves a waiting send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::client::{answer_payload, wait_reply, Client, ClientConfig, Pending, Received, Reply, SendOptions};
use super::identity::{Address, Identity};
use super::{payload, NknError, Result};
use crate::proto::nkn::payloads::{Payload, PayloadType};

/// Configuration of a MultiClient.
#[derive(Clone, Debug)]
pub struct MultiClientConfig {
    /// Per sub-client configuration; its `identifier` is the base
    /// identifier.
    pub client: ClientConfig,
    /// Number of `__i__` sub-clients (SDK default 4).
    pub num_clients: usize,
    /// Also run a client with the base address itself.
    pub original_client: bool,
    /// How long a message ID is remembered for dedup (SDK: 300 s).
    pub msg_cache_expiration: Duration,
}

impl Default for MultiClientConfig {
    fn default() -> Self {
        MultiClientConfig {
            client: ClientConfig::default(),
            num_clients: 4,
            original_client: false,
            msg_cache_expiration: Duration::from_secs(300),
        }
    }
}

/// Message IDs seen recently.
#[derive(Debug)]
pub struct DedupCache {
    seen: HashMap<Bytes, Instant>,
    ttl: Duration,
    last_cleanup: Instant,
}

impl DedupCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        DedupCache { seen: HashMap::new(), ttl, last_cleanup: Instant::now() }
    }

    /// Whether `id` is new at `now` (and remember it). Expired entries are
    /// swept at most once per `min(ttl, 60 s)`.
    pub fn first_time(&mut self, id: &Bytes, now: Instant) -> bool {
        if now.duration_since(self.last_cleanup) >= self.ttl.min(Duration::from_secs(60)) {
            let ttl = self.ttl;
            self.seen.retain(|_, t| now.duration_since(*t) < ttl);
            self.last_cleanup = now;
        }
        match self.seen.get(id) {
            Some(t) if now.duration_since(*t) < self.ttl => false,
            _ => {
                self.seen.insert(id.clone(), now);
                true
            }
        }
    }

    /// Number of remembered IDs.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Turns a sub-client arrival into what the application sees: `src` without
/// the `__i__.` prefix, `None` for a duplicate.
pub fn dedup_arrival(mut r: Received, cache: &mut DedupCache, now: Instant) -> Option<Received> {
    if let Ok(a) = Address::parse(&r.src) {
        if let Some((_, base)) = a.split_subclient() {
            r.src = base.to_string();
        }
    }
    if r.payload_type != PayloadType::Session && !r.message_id.is_empty() && !cache.first_time(&r.message_id, now) {
        return None;
    }
    Some(r)
}

/// A MultiClient. Dropping it closes every sub-client.
pub struct MultiClient {
    /// `(index, client)`; the original client, if any, has index `None`.
    clients: Vec<(Option<usize>, Client)>,
    address: String,
    pending: Arc<Pending>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Drop for MultiClient {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl std::fmt::Debug for MultiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiClient").field("address", &self.address).field("clients", &self.clients.len()).finish()
    }
}

impl MultiClient {
    /// Starts the sub-clients and returns the MultiClient with the receiver
    /// of deduplicated messages. Must be called inside a tokio runtime.
    pub fn new(identity: Identity, config: MultiClientConfig) -> (MultiClient, mpsc::Receiver<Received>) {
        let cap = config.client.channel_capacity.max(1);
        let (sub_tx, mut sub_rx) = mpsc::channel::<Received>(cap);
        let (tx, rx) = mpsc::channel(cap);
        let pending = Arc::new(Pending::default());
        let base = config.client.identifier.clone();
        let address = identity.address(&base);
        let mut clients = Vec::new();
        for i in 0..config.num_clients {
            let mut c = config.client.clone();
            c.identifier = if base.is_empty() { format!("__{i}__") } else { format!("__{i}__.{base}") };
            clients.push((Some(i), Client::with_parts(identity.clone(), c, pending.clone(), sub_tx.clone())));
        }
        if config.original_client {
            clients.push((None, Client::with_parts(identity, config.client.clone(), pending.clone(), sub_tx.clone())));
        }
        drop(sub_tx);
        let ttl = config.msg_cache_expiration;
        let forwarder = tokio::spawn(async move {
            let mut cache = DedupCache::new(ttl);
            while let Some(r) = sub_rx.recv().await {
                if let Some(r) = dedup_arrival(r, &mut cache, Instant::now()) {
                    if tx.send(r).await.is_err() {
                        break;
                    }
                }
            }
        });
        (MultiClient { clients, address, pending, forwarder }, rx)
    }

    /// The base address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The sub-clients.
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.iter().map(|(_, c)| c)
    }

    /// Whether any sub-client is ready.
    pub fn is_ready(&self) -> bool {
        self.clients.iter().any(|(_, c)| c.is_ready())
    }

    /// Number of ready sub-clients.
    pub fn ready_count(&self) -> usize {
        self.clients.iter().filter(|(_, c)| c.is_ready()).count()
    }

    /// Waits until at least `n` sub-clients are ready.
    pub async fn wait_ready_count(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready_count() >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NknError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until any sub-client is ready.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.wait_ready_count(1, timeout).await
    }

    /// Closes every sub-client.
    pub fn close(&self) {
        for (_, c) in &self.clients {
            c.close();
        }
    }

    /// Sends `data` to the MultiClients `dests` (base addresses) over every
    /// ready sub-client, with one message ID, which is returned.
    pub async fn send<S: AsRef<str>>(&self, dests: &[S], data: Bytes, opts: SendOptions) -> Result<Bytes> {
        let id = opts.message_id.clone().unwrap_or_else(payload::new_message_id);
        let p = if opts.text {
            let t = std::str::from_utf8(&data).map_err(|_| NknError::Malformed("text is not UTF-8"))?;
            payload::text(id.clone(), t, opts.no_reply)
        } else {
            payload::binary(id.clone(), data, opts.no_reply)
        };
        self.send_all(dests, &p, opts.encrypt, opts.max_holding).await?;
        Ok(id)
    }

    /// Sends and waits for the first answer from any sub-client.
    pub async fn send_and_wait_reply<S: AsRef<str>>(
        &self,
        dests: &[S],
        data: Bytes,
        mut opts: SendOptions,
        timeout: Duration,
    ) -> Result<Reply> {
        let id = opts.message_id.clone().unwrap_or_else(payload::new_message_id);
        opts.message_id = Some(id.clone());
        let rx = self.pending.register(id.clone());
        if let Err(e) = self.send(dests, data, opts).await {
            self.pending.remove(&id);
            return Err(e);
        }
        let mut r = wait_reply(&self.pending, id, rx, timeout).await?;
        if let Ok(a) = Address::parse(&r.src) {
            if let Some((_, base)) = a.split_subclient() {
                r.src = base.to_string();
            }
        }
        Ok(r)
    }

    /// Answers a received message over every ready sub-client (`None`: an
    /// ACK). Does nothing when the sender asked for no reply.
    pub async fn reply(&self, to: &Received, data: Option<Bytes>) -> Result<()> {
        if to.no_reply {
            return Ok(());
        }
        let p = answer_payload(to, data);
        self.send_all(&[to.src.as_str()], &p, to.encrypted, 0).await
    }

    /// Answers a received message with text.
    pub async fn reply_text(&self, to: &Received, text: &str) -> Result<()> {
        if to.no_reply {
            return Ok(());
        }
        let p = payload::reply_text(to.message_id.clone(), text);
        self.send_all(&[to.src.as_str()], &p, to.encrypted, 0).await
    }

    async fn send_all<S: AsRef<str>>(&self, dests: &[S], p: &Payload, encrypt: bool, max_holding: u32) -> Result<()> {
        let bases: Vec<Address> = dests.iter().map(|d| Address::parse(d.as_ref())).collect::<Result<_>>()?;
        let mut last = NknError::NotConnected;
        let mut sent = 0;
        for (i, c) in &self.clients {
            if !c.is_ready() {
                continue;
            }
            let ds: Vec<String> =
                bases.iter().map(|b| i.map(|i| b.with_subclient(i)).unwrap_or_else(|| b.clone()).to_string()).collect();
            match c.send_payload(&ds, p, encrypt, max_holding).await {
                Ok(()) => sent += 1,
                Err(e) => last = e,
            }
        }
        if sent > 0 {
            Ok(())
        } else {
            Err(last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nkn::identity::tests::PK_A;

    fn received(src: &str, id: &'static [u8], ty: PayloadType) -> Received {
        Received {
            src: src.into(),
            data: Bytes::from_static(b"d"),
            message_id: Bytes::from_static(id),
            is_text: false,
            no_reply: false,
            encrypted: true,
            payload_type: ty,
        }
    }

    #[test]
    fn dedup() {
        let t0 = Instant::now();
        let mut c = DedupCache::new(Duration::from_secs(10));
        let r = dedup_arrival(received(&format!("__0__.gw.{PK_A}"), b"12345678", PayloadType::Binary), &mut c, t0).unwrap();
        assert_eq!(r.src, format!("gw.{PK_A}"));
        assert!(dedup_arrival(received(&format!("__1__.gw.{PK_A}"), b"12345678", PayloadType::Binary), &mut c, t0).is_none());
        // SESSION is never deduplicated.
        for _ in 0..2 {
            assert!(dedup_arrival(received(&format!("__1__.{PK_A}"), b"12345678", PayloadType::Session), &mut c, t0).is_some());
        }
        // After expiry the ID is new again, and the sweep drops old entries.
        let later = t0 + Duration::from_secs(11);
        assert!(dedup_arrival(received(PK_A, b"12345678", PayloadType::Text), &mut c, later).is_some());
        assert!(dedup_arrival(received(PK_A, b"abcdefgh", PayloadType::Text), &mut c, later).is_some());
        assert_eq!(c.len(), 2);
        // A plain (non-sub-client) src is kept as is.
        let r = dedup_arrival(received(PK_A, b"zzzzzzzz", PayloadType::Binary), &mut c, later).unwrap();
        assert_eq!(r.src, PK_A);
    }
}
