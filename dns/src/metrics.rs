//! The server's counters in Prometheus' text format (names after CoreDNS'
//! `coredns_dns_*` and `coredns_cache_*`, prefixed `shoal_dns_`): queries by
//! type, responses by rcode, a latency histogram, the upstream cache's hits
//! and misses, and the index's size and rebuilds.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;

/// A query's type, as a label without an allocation per query.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
enum QType {
    A,
    AAAA,
    SRV,
    PTR,
    CNAME,
    TXT,
    SOA,
    NS,
    MX,
    ANY,
    Other,
}

impl From<RecordType> for QType {
    fn from(t: RecordType) -> Self {
        match t {
            RecordType::A => Self::A,
            RecordType::AAAA => Self::AAAA,
            RecordType::SRV => Self::SRV,
            RecordType::PTR => Self::PTR,
            RecordType::CNAME => Self::CNAME,
            RecordType::TXT => Self::TXT,
            RecordType::SOA => Self::SOA,
            RecordType::NS => Self::NS,
            RecordType::MX => Self::MX,
            RecordType::ANY => Self::ANY,
            _ => Self::Other,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
enum Rcode {
    NOERROR,
    NXDOMAIN,
    SERVFAIL,
    REFUSED,
    FORMERR,
    NOTIMP,
    OTHER,
}

impl From<ResponseCode> for Rcode {
    fn from(c: ResponseCode) -> Self {
        match c {
            ResponseCode::NoError => Self::NOERROR,
            ResponseCode::NXDomain => Self::NXDOMAIN,
            ResponseCode::ServFail => Self::SERVFAIL,
            ResponseCode::Refused => Self::REFUSED,
            ResponseCode::FormErr => Self::FORMERR,
            ResponseCode::NotImp => Self::NOTIMP,
            _ => Self::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QTypeLabel {
    r#type: QType,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabel {
    rcode: Rcode,
}

/// The DNS server's metrics; shared by the handlers.
pub struct Metrics {
    registry: Registry,
    requests: Family<QTypeLabel, Counter>,
    responses: Family<RcodeLabel, Counter>,
    duration: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    names: Gauge,
    rebuilds: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let requests = Family::<QTypeLabel, Counter>::default();
        let responses = Family::<RcodeLabel, Counter>::default();
        // 25 µs to ~1.6 s.
        let duration =
            Histogram::new(std::iter::successors(Some(0.000_025), |b| Some(b * 2.0)).take(17));
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let names = Gauge::default();
        let rebuilds = Counter::default();
        let mut registry = Registry::with_prefix("shoal_dns");
        registry.register(
            "requests",
            "DNS queries received, by type",
            requests.clone(),
        );
        registry.register(
            "responses",
            "DNS responses sent, by rcode",
            responses.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a query's arrival to its response",
            duration.clone(),
        );
        registry.register(
            "cache_hits",
            "Queries for outside names answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Queries for outside names sent to the upstream resolvers",
            cache_misses.clone(),
        );
        registry.register(
            "zone_names",
            "Names in the cluster zone and its reverse names",
            names.clone(),
        );
        registry.register(
            "zone_rebuilds",
            "Rebuilds of the cluster zone after a change",
            rebuilds.clone(),
        );
        Self {
            registry,
            requests,
            responses,
            duration,
            cache_hits,
            cache_misses,
            names,
            rebuilds,
        }
    }

    pub(crate) fn query(&self, rtype: RecordType, rcode: ResponseCode, seconds: f64) {
        self.requests
            .get_or_create(&QTypeLabel {
                r#type: rtype.into(),
            })
            .inc();
        self.responses
            .get_or_create(&RcodeLabel {
                rcode: rcode.into(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    pub(crate) fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub(crate) fn rebuilt(&self, names: usize) {
        self.rebuilds.inc();
        self.names.set(i64::try_from(names).unwrap_or(i64::MAX));
    }

    /// The exposition, in Prometheus' text format.
    pub fn render(&self) -> String {
        shoal_core::metrics::render(&self.registry)
    }
}
