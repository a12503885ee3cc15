//! The zone handlers the server's catalog routes questions to:
//!
//! ```text
//!   <zone>.        ClusterZone    the cluster's names, from the index
//!   in-addr.arpa.  ReverseZone    PTR of cluster addresses; other
//!   ip6.arpa.        └▶ Upstream  addresses go upstream
//!   .              Upstream       everything else, with a cache
//! ```
//!
//! An ExternalName's CNAME is followed for the client: inside the zone from
//! the index, outside through the upstream resolvers, so that an `A`
//! question for `database.production.svc.cluster.local` gets the CNAME and
//! the external name's addresses in one answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::NetError;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{LowerName, Name, Record, RecordType, TSigResponseContext};
use hickory_server::resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_server::resolver::lookup::Lookup;
use hickory_server::resolver::Resolver;
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneType,
};

use crate::index::{Answer, Index};
use crate::metrics::Metrics;

/// How many CNAMEs inside the zone are followed before giving up.
const MAX_CHAIN: usize = 8;

/// The current index, swapped whole when the cluster changes.
#[derive(Debug)]
pub struct View(RwLock<Arc<Index>>);

impl View {
    pub fn new(index: Index) -> Self {
        Self(RwLock::new(Arc::new(index)))
    }

    pub fn get(&self) -> Arc<Index> {
        match self.0.read() {
            Ok(index) => index.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, index: Index) {
        let index = Arc::new(index);
        match self.0.write() {
            Ok(mut slot) => *slot = index,
            Err(poisoned) => *poisoned.into_inner() = index,
        }
    }
}

fn question(request: &Request) -> Result<(LowerName, RecordType), LookupError> {
    let info = request.request_info()?;
    Ok((info.query.name().clone(), info.query.query_type()))
}

/// The cluster domain.
pub struct ClusterZone {
    origin: LowerName,
    view: Arc<View>,
    upstream: Arc<Upstream>,
}

impl ClusterZone {
    pub fn new(view: Arc<View>, upstream: Arc<Upstream>) -> Self {
        let origin = view.get().zone().clone();
        Self {
            origin,
            view,
            upstream,
        }
    }

    /// The answer to `name`/`rtype`, following CNAMEs.
    async fn answer(&self, name: &LowerName, rtype: RecordType) -> LookupControlFlow<AuthLookup> {
        let index = self.view.get();
        let first = match index.lookup(name, rtype) {
            Answer::Records {
                answers,
                additionals,
            } => {
                let adds = (!additionals.is_empty()).then(|| {
                    LookupRecords::ManyRecords(LookupOptions::default(), additionals.to_vec())
                });
                return LookupControlFlow::Break(Ok(AuthLookup::answers(
                    LookupRecords::new(LookupOptions::default(), answers.clone()),
                    adds,
                )));
            }
            Answer::NoData => return LookupControlFlow::Break(Err(LookupError::NameExists)),
            Answer::NxDomain => {
                return LookupControlFlow::Break(Err(LookupError::ResponseCode(
                    ResponseCode::NXDomain,
                )))
            }
            Answer::Alias { cname, target } => (cname.clone(), target.clone()),
        };
        // An alias: the CNAME, then what its target resolves to.
        let mut records: Vec<Record> = first.0.records_without_rrsigs().cloned().collect();
        let mut target = first.1;
        for _ in 0..MAX_CHAIN {
            let lower = LowerName::from(&target);
            if !self.origin.zone_of(&lower) {
                records.extend(self.upstream.resolve(&lower, rtype).await);
                break;
            }
            match index.lookup(&lower, rtype) {
                Answer::Records { answers, .. } => {
                    records.extend(answers.records_without_rrsigs().cloned());
                    break;
                }
                Answer::Alias {
                    cname,
                    target: next,
                } => {
                    records.extend(cname.records_without_rrsigs().cloned());
                    target = next.clone();
                }
                Answer::NoData | Answer::NxDomain => break,
            }
        }
        LookupControlFlow::Break(Ok(AuthLookup::answers(
            LookupRecords::Section(records),
            None,
        )))
    }
}

#[async_trait::async_trait]
impl ZoneHandler for ClusterZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.answer(name, rtype).await
    }

    async fn search(
        &self,
        request: &Request,
        _lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let flow = match question(request) {
            Ok((name, rtype)) => self.answer(&name, rtype).await,
            Err(e) => LookupControlFlow::Break(Err(e)),
        };
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(Err(LookupError::from(ResponseCode::NotImp)))
    }
}

/// `in-addr.arpa.` or `ip6.arpa.`: PTR records of the cluster's
/// addresses; any other question is skipped, so that the upstream handler
/// after this one answers it.
pub struct ReverseZone {
    origin: LowerName,
    view: Arc<View>,
}

impl ReverseZone {
    pub fn new(origin: &str, view: Arc<View>) -> Result<Self, String> {
        let origin = Name::from_ascii(origin).map_err(|e| e.to_string())?;
        Ok(Self {
            origin: LowerName::from(&origin),
            view,
        })
    }

    fn answer(&self, name: &LowerName, rtype: RecordType) -> LookupControlFlow<AuthLookup> {
        if rtype != RecordType::PTR {
            return LookupControlFlow::Skip;
        }
        match self.view.get().lookup_reverse(name, rtype) {
            Some(Answer::Records { answers, .. }) => {
                LookupControlFlow::Break(Ok(AuthLookup::from(LookupRecords::new(
                    LookupOptions::default(),
                    answers.clone(),
                ))))
            }
            _ => LookupControlFlow::Skip,
        }
    }
}

#[async_trait::async_trait]
impl ZoneHandler for ReverseZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.answer(name, rtype)
    }

    async fn search(
        &self,
        request: &Request,
        _lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let flow = match question(request) {
            Ok((name, rtype)) => self.answer(&name, rtype),
            Err(e) => LookupControlFlow::Break(Err(e)),
        };
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Skip
    }
}

/// The most answers the upstream cache keeps; when full, expired ones go,
/// and if none had expired, all of them.
const CACHE_ENTRIES: usize = 10_000;
/// The longest a forwarded answer is kept (CoreDNS' cache: 3600 s for
/// answers, 1800 s for denials; shorter here, upstream records change).
const CACHE_MAX_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX_NEGATIVE_TTL: Duration = Duration::from_secs(60);

type Cached = (Instant, Result<Lookup, NetError>);

/// Names outside the cluster, asked of the node's resolvers.
pub struct Upstream {
    origin: LowerName,
    resolver: Option<Resolver<TokioRuntimeProvider>>,
    cache: Mutex<HashMap<(LowerName, RecordType), Cached>>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// Forwards to `servers`; none: every outside name is SERVFAIL at once.
    /// A server that does not answer within `timeout` is SERVFAIL too
    /// (before the client's own timeout, 5 s for glibc and dig).
    pub fn new(
        servers: &[SocketAddr],
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, NetError> {
        let resolver = if servers.is_empty() {
            None
        } else {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let connection = |protocol| {
                        let mut c = ConnectionConfig::new(protocol);
                        c.port = addr.port();
                        c
                    };
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    ns.connections = vec![
                        connection(ProtocolConfig::Udp),
                        connection(ProtocolConfig::Tcp),
                    ];
                    ns
                })
                .collect();
            let config = ResolverConfig::from_parts(None, vec![], name_servers);
            let mut builder =
                Resolver::builder_with_config(config, TokioRuntimeProvider::default());
            let opts: &mut ResolverOpts = builder.options_mut();
            opts.timeout = timeout;
            opts.attempts = 1;
            opts.preserve_intermediates = true;
            opts.cache_size = 0;
            opts.ndots = 0;
            Some(builder.build()?)
        };
        Ok(Self {
            origin: LowerName::from(&Name::root()),
            resolver,
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The answer records for `name`/`rtype`; none when the name has none
    /// or no upstream answered.
    pub async fn resolve(&self, name: &LowerName, rtype: RecordType) -> Vec<Record> {
        match self.lookup_cached(name, rtype).await {
            Ok(lookup) => lookup.answers().to_vec(),
            Err(_) => Vec::new(),
        }
    }

    async fn lookup_cached(&self, name: &LowerName, rtype: RecordType) -> Result<Lookup, NetError> {
        let Some(resolver) = self.resolver.as_ref() else {
            return Err(NetError::from("no upstream name server"));
        };
        let key = (name.clone(), rtype);
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            if let Some((until, result)) = cache.get(&key) {
                if *until > now {
                    self.metrics.cache_hit();
                    return result.clone();
                }
            }
        }
        self.metrics.cache_miss();
        let result = resolver.lookup(Name::from(name), rtype).await;
        let until = match &result {
            Ok(lookup) => Some(lookup.valid_until().min(now + CACHE_MAX_TTL)),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                let ttl = negative_ttl(e).unwrap_or(Duration::from_secs(5));
                Some(now + ttl.min(CACHE_MAX_NEGATIVE_TTL))
            }
            // A timeout or a refusal is not remembered.
            Err(_) => None,
        };
        if let (Some(until), Ok(mut cache)) = (until, self.cache.lock()) {
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, (u, _)| *u > now);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, (until, result.clone()));
        }
        result
    }
}

fn negative_ttl(e: &NetError) -> Option<Duration> {
    use hickory_server::net::{DnsError, NoRecords};
    match e {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            negative_ttl: Some(ttl),
            ..
        })) => Some(Duration::from_secs(u64::from(*ttl))),
        _ => None,
    }
}

#[async_trait::async_trait]
impl ZoneHandler for Upstream {
    fn zone_type(&self) -> ZoneType {
        ZoneType::External
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        match self.lookup_cached(name, rtype).await {
            Ok(lookup) => LookupControlFlow::Continue(Ok(AuthLookup::from(lookup))),
            Err(e) => LookupControlFlow::Continue(Err(LookupError::from(e))),
        }
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let flow = match question(request) {
            Ok((name, rtype)) => self.lookup(&name, rtype, None, lookup_options).await,
            Err(e) => LookupControlFlow::Break(Err(e)),
        };
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(Err(LookupError::from(ResponseCode::NotImp)))
    }
}

/// The name servers of a resolv.conf (`nameserver <ip>` lines), on port
/// 53, leaving out `exclude` (this server's own addresses: forwarding to
/// itself would loop).
pub fn resolv_conf_servers(text: &str, exclude: &[SocketAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|addr| !exclude.contains(addr))
        .collect()
}
