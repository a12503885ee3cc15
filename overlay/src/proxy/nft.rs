//! A [`Ruleset`] as nftables' JSON commands (the `nftables` crate's schema),
//! and the transaction that turns the applied ruleset into the next one:
//! only what changed is rewritten, and `nft -j -f -` applies the whole
//! transaction atomically.
//!
//! The table's fixed part (hooks, maps, masquerading):
//!
//! ```text
//!  nat-prerouting / nat-output   (nat, dstnat)   jump services
//!  nat-postrouting               (nat, srcnat)   jump masquerading
//!  filter-{input,forward,output} (filter, -10)   ct state new jump endpoints-check
//!  services           ip daddr . meta l4proto . th dport vmap @service-ips
//!                     fib daddr type local, not 127/8: meta l4proto . th dport vmap @service-nodeports
//!  endpoints-check    the same against @no-endpoint-services / @no-endpoint-nodeports;
//!                     ip daddr @cluster-ips reject (a ClusterIP's unknown ports)
//!  policy-forward (filter, -5)  ct state established,related accept
//!                     ip saddr vmap @pod-egress; ip daddr vmap @pod-ingress
//!  reject-chain / drop-chain  where the no-endpoint maps send packets
//!  mark-for-masquerade  meta mark |= 0x4000
//!  masquerading         marked: clear the mark, masquerade fully-random
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;

use nftables::expr::{
    BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, NgMode,
    Numgen, Payload, PayloadField, Prefix, Range, SetItem, Verdict, CT,
};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, NfObject, Rule as NfRule, Set, SetFlag,
    SetType, SetTypeValue, Table,
};
use nftables::stmt::{
    JumpTarget, Mangle, Match, NATFlag, Operator, Reject, RejectType, SetOp, Statement, VerdictMap,
    NAT,
};
use nftables::types::{NfChainType, NfFamily, NfHook};
use serde_json::{json, Value};

use super::plan::{AddressKey, PortKey, Protocol, Rule, Ruleset, Target};
use super::policy::Peer;
use crate::Ipv4Cidr;

/// The table's name (family `ip`).
pub const TABLE: &str = "shoal";
/// The packet mark that asks for masquerading (kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The chain every Service lookup starts from.
pub const SERVICES: &str = "services";
const ENDPOINTS_CHECK: &str = "endpoints-check";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const MASQUERADING: &str = "masquerading";
const REJECT: &str = "reject-chain";
const DROP: &str = "drop-chain";
const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const CLUSTER_IPS: &str = "cluster-ips";
const POD_INGRESS: &str = "pod-ingress";
const POD_EGRESS: &str = "pod-egress";

/// Priority of the policy chain: after the Services' checks.
const POLICY_PRIORITY: i32 = -5;
/// Priority of the filter chains: before the filter tables of others
/// (iptables' at 0), so that a Service without endpoints is refused here.
const FILTER_PRIORITY: i32 = -10;
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;

/// The commands that turn `applied` into `next` (`None`: the table is
/// rebuilt from nothing, whatever the kernel holds). Empty when nothing
/// changed.
pub fn transaction(applied: Option<&Ruleset>, next: &Ruleset) -> Vec<Value> {
    let mut out = Commands::default();
    let empty = Ruleset::default();
    let previous = match applied {
        Some(previous) => {
            if previous.tunnel != next.tunnel {
                out.flush_chain(MASQUERADING);
                out.masquerading(next.tunnel.as_ref());
            }
            previous
        }
        None => {
            out.fixed_part();
            out.masquerading(next.tunnel.as_ref());
            &empty
        }
    };

    // New affinity sets and chains first: rules below refer to them.
    for (name, timeout) in &next.affinity_sets {
        if previous.affinity_sets.get(name) != Some(timeout) {
            if previous.affinity_sets.contains_key(name) {
                out.delete(NfListObject::Set(Box::new(affinity_set(name, *timeout))));
            }
            out.add(NfListObject::Set(Box::new(affinity_set(name, *timeout))));
        }
    }
    for name in next.chains.keys() {
        if !previous.chains.contains_key(name) {
            out.add(NfListObject::Chain(chain(name)));
        }
    }
    for (name, rules) in &next.chains {
        match previous.chains.get(name) {
            Some(old) if old == rules => continue,
            Some(_) => out.flush_chain(name),
            None => {}
        }
        for rule in rules {
            out.add(NfListObject::Rule(nf_rule(name, statements(rule))));
        }
    }
    // Chains that go away lose their rules now (and with them their
    // references to other chains and sets), and are deleted at the end.
    let removed: Vec<&String> = previous
        .chains
        .keys()
        .filter(|name| !next.chains.contains_key(*name))
        .collect();
    for name in &removed {
        out.flush_chain(name);
    }

    out.map_changes(
        SERVICE_IPS,
        &previous.services,
        &next.services,
        address_key,
        |c| goto(c),
    );
    out.map_changes(
        SERVICE_NODEPORTS,
        &previous.node_ports,
        &next.node_ports,
        port_key,
        |c| goto(c),
    );
    out.map_changes(
        NO_ENDPOINT_SERVICES,
        &previous.no_endpoints,
        &next.no_endpoints,
        address_key,
        target,
    );
    out.map_changes(
        NO_ENDPOINT_NODEPORTS,
        &previous.no_endpoint_node_ports,
        &next.no_endpoint_node_ports,
        port_key,
        target,
    );
    out.set_changes(CLUSTER_IPS, &previous.cluster_ips, &next.cluster_ips);
    let address = |ip: &Ipv4Addr| Expression::String(ip.to_string().into());
    out.map_changes(
        POD_INGRESS,
        &previous.pod_ingress,
        &next.pod_ingress,
        address,
        |c| jump(c),
    );
    out.map_changes(
        POD_EGRESS,
        &previous.pod_egress,
        &next.pod_egress,
        address,
        |c| jump(c),
    );

    for name in removed {
        out.delete(NfListObject::Chain(chain(name)));
    }
    for (name, timeout) in &previous.affinity_sets {
        if !next.affinity_sets.contains_key(name) {
            out.delete(NfListObject::Set(Box::new(affinity_set(name, *timeout))));
        }
    }
    out.0
}

/// The commands of a transaction, in order.
#[derive(Default)]
struct Commands(Vec<Value>);

impl Commands {
    fn push(&mut self, command: NfCmd<'_>) {
        // The schema's types always serialize.
        if let Ok(value) = serde_json::to_value(NfObject::CmdObject(command)) {
            self.0.push(value);
        }
    }

    fn add(&mut self, object: NfListObject<'_>) {
        self.push(NfCmd::Add(object));
    }

    fn delete(&mut self, object: NfListObject<'_>) {
        self.push(NfCmd::Delete(object));
    }

    fn flush_chain(&mut self, name: &str) {
        self.push(NfCmd::Flush(FlushObject::Chain(chain(name))));
    }

    /// The table from nothing: an existing one (an earlier agent's) is
    /// deleted in the same transaction, so there is never a moment without
    /// rules.
    fn fixed_part(&mut self) {
        let table = || {
            NfListObject::Table(Table {
                family: NfFamily::IP,
                name: TABLE.into(),
                handle: None,
            })
        };
        self.add(table());
        self.delete(table());
        self.add(table());

        for (name, kind, hook, priority) in [
            (
                "nat-prerouting",
                NfChainType::NAT,
                NfHook::Prerouting,
                DSTNAT,
            ),
            ("nat-output", NfChainType::NAT, NfHook::Output, DSTNAT),
            (
                "nat-postrouting",
                NfChainType::NAT,
                NfHook::Postrouting,
                SRCNAT,
            ),
            (
                "filter-input",
                NfChainType::Filter,
                NfHook::Input,
                FILTER_PRIORITY,
            ),
            (
                "filter-forward",
                NfChainType::Filter,
                NfHook::Forward,
                FILTER_PRIORITY,
            ),
            (
                "filter-output",
                NfChainType::Filter,
                NfHook::Output,
                FILTER_PRIORITY,
            ),
            (
                "policy-forward",
                NfChainType::Filter,
                NfHook::Forward,
                POLICY_PRIORITY,
            ),
        ] {
            self.add(NfListObject::Chain(Chain {
                _type: Some(kind),
                hook: Some(hook),
                prio: Some(priority),
                ..chain(name)
            }));
        }
        for name in [
            SERVICES,
            ENDPOINTS_CHECK,
            MARK_FOR_MASQUERADE,
            MASQUERADING,
            REJECT,
            DROP,
        ] {
            self.add(NfListObject::Chain(chain(name)));
        }
        // The crate's map type has no `verdict` value type: the four
        // verdict maps are declared in nftables' JSON directly.
        for (name, key) in [
            (
                SERVICE_IPS,
                json!(["ipv4_addr", "inet_proto", "inet_service"]),
            ),
            (SERVICE_NODEPORTS, json!(["inet_proto", "inet_service"])),
            (
                NO_ENDPOINT_SERVICES,
                json!(["ipv4_addr", "inet_proto", "inet_service"]),
            ),
            (NO_ENDPOINT_NODEPORTS, json!(["inet_proto", "inet_service"])),
            (POD_INGRESS, json!("ipv4_addr")),
            (POD_EGRESS, json!("ipv4_addr")),
        ] {
            self.0.push(json!({"add": {"map": {
                "family": "ip", "table": TABLE, "name": name, "type": key, "map": "verdict",
            }}}));
        }
        self.add(NfListObject::Set(Box::new(Set {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: CLUSTER_IPS.into(),
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            ..Set::default()
        })));

        let jump = |target: &str| {
            Statement::Jump(JumpTarget {
                target: target.to_string().into(),
            })
        };
        let new_connection = Statement::Match(Match {
            left: Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            })),
            right: Expression::String("new".into()),
            op: Operator::IN,
        });
        let mut rules: Vec<(&str, Vec<Statement>)> = vec![
            ("nat-prerouting", vec![jump(SERVICES)]),
            ("nat-output", vec![jump(SERVICES)]),
            ("nat-postrouting", vec![jump(MASQUERADING)]),
        ];
        for name in ["filter-input", "filter-forward", "filter-output"] {
            rules.push((name, vec![new_connection.clone(), jump(ENDPOINTS_CHECK)]));
        }
        rules.push((
            "policy-forward",
            vec![
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::CT(CT {
                        key: "state".into(),
                        family: None,
                        dir: None,
                    })),
                    right: Expression::List(vec![
                        Expression::String("established".into()),
                        Expression::String("related".into()),
                    ]),
                    op: Operator::IN,
                }),
                Statement::Accept(None),
            ],
        ));
        rules.push((
            "policy-forward",
            vec![vmap(payload("ip", "saddr"), POD_EGRESS)],
        ));
        rules.push((
            "policy-forward",
            vec![vmap(payload("ip", "daddr"), POD_INGRESS)],
        ));
        for (chain_name, by_address, by_port) in [
            (SERVICES, SERVICE_IPS, SERVICE_NODEPORTS),
            (ENDPOINTS_CHECK, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS),
        ] {
            rules.push((
                chain_name,
                vec![vmap(
                    concat(vec![
                        payload("ip", "daddr"),
                        l4proto(),
                        payload("th", "dport"),
                    ]),
                    by_address,
                )],
            ));
            // NodePorts on every local address but loopback.
            rules.push((
                chain_name,
                vec![
                    fib_local(FibFlag::Daddr),
                    Statement::Match(Match {
                        left: payload("ip", "daddr"),
                        right: Expression::Named(NamedExpression::Prefix(Prefix {
                            addr: Box::new(Expression::String("127.0.0.0".into())),
                            len: 8,
                        })),
                        op: Operator::NEQ,
                    }),
                    vmap(concat(vec![l4proto(), payload("th", "dport")]), by_port),
                ],
            ));
        }
        rules.push((
            ENDPOINTS_CHECK,
            vec![
                Statement::Match(Match {
                    left: payload("ip", "daddr"),
                    right: Expression::String(format!("@{CLUSTER_IPS}").into()),
                    op: Operator::EQ,
                }),
                Statement::Goto(JumpTarget {
                    target: REJECT.into(),
                }),
            ],
        ));
        // TCP gets a reset: ICMP errors are rate-limited by the kernel (one
        // a second per destination), so a client refused twice in a second
        // would hang on its second try.
        rules.push((
            REJECT,
            vec![
                matches(l4proto(), Expression::String("tcp".into()), Operator::EQ),
                Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
            ],
        ));
        rules.push((
            REJECT,
            vec![Statement::Reject(Some(Reject::new(None, None)))],
        ));
        // A verdict map element cannot say `drop` in nftables 1.0's JSON.
        rules.push((DROP, vec![Statement::Drop(None)]));
        let mark = || Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark }));
        rules.push((
            MARK_FOR_MASQUERADE,
            vec![Statement::Mangle(Mangle {
                key: mark(),
                value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                    mark(),
                    Expression::Number(MASQUERADE_MARK),
                ]))),
            })],
        ));
        for (chain_name, statements) in rules {
            self.add(NfListObject::Rule(nf_rule(chain_name, statements)));
        }
    }

    /// The masquerading chain's rules: marked packets lose the mark and
    /// are masqueraded; into the tunnel, with the node's gateway address.
    fn masquerading(&mut self, tunnel: Option<&(String, Ipv4Addr)>) {
        let mark = || Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark }));
        let fully_random = || Some(HashSet::from([NATFlag::FullyRandom]));
        let mut rules = vec![
            vec![
                matches(
                    Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                        mark(),
                        Expression::Number(MASQUERADE_MARK),
                    ))),
                    Expression::Number(0),
                    Operator::EQ,
                ),
                Statement::Return(None),
            ],
            vec![Statement::Mangle(Mangle {
                key: mark(),
                value: Expression::BinaryOperation(Box::new(BinaryOperation::XOR(
                    mark(),
                    Expression::Number(MASQUERADE_MARK),
                ))),
            })],
        ];
        if let Some((device, source)) = tunnel {
            rules.push(vec![
                matches(
                    Expression::Named(NamedExpression::Meta(Meta {
                        key: MetaKey::Oifname,
                    })),
                    Expression::String(device.clone().into()),
                    Operator::EQ,
                ),
                Statement::SNAT(Some(NAT {
                    addr: Some(Expression::String(source.to_string().into())),
                    family: None,
                    port: None,
                    flags: fully_random(),
                })),
            ]);
        }
        rules.push(vec![Statement::Masquerade(Some(NAT {
            addr: None,
            family: None,
            port: None,
            flags: fully_random(),
        }))]);
        for statements in rules {
            self.add(NfListObject::Rule(nf_rule(MASQUERADING, statements)));
        }
    }

    /// Deletes the elements that went away or changed, adds the new ones.
    fn map_changes<K: Ord, V: PartialEq>(
        &mut self,
        map: &str,
        previous: &BTreeMap<K, V>,
        next: &BTreeMap<K, V>,
        key: impl Fn(&K) -> Expression<'static>,
        value: impl Fn(&V) -> Expression<'static>,
    ) {
        let stale: Vec<Expression> = previous
            .iter()
            .filter(|(k, v)| next.get(k) != Some(v))
            .map(|(k, _)| key(k))
            .collect();
        let fresh: Vec<Expression> = next
            .iter()
            .filter(|(k, v)| previous.get(k) != Some(v))
            .map(|(k, v)| Expression::List(vec![key(k), value(v)]))
            .collect();
        if !stale.is_empty() {
            self.delete(NfListObject::Element(element(map, stale)));
        }
        if !fresh.is_empty() {
            self.add(NfListObject::Element(element(map, fresh)));
        }
    }

    fn set_changes(&mut self, set: &str, previous: &BTreeSet<Ipv4Addr>, next: &BTreeSet<Ipv4Addr>) {
        let address = |ip: &&Ipv4Addr| Expression::String(ip.to_string().into());
        let stale: Vec<Expression> = previous.difference(next).map(|ip| address(&ip)).collect();
        let fresh: Vec<Expression> = next.difference(previous).map(|ip| address(&ip)).collect();
        if !stale.is_empty() {
            self.delete(NfListObject::Element(element(set, stale)));
        }
        if !fresh.is_empty() {
            self.add(NfListObject::Element(element(set, fresh)));
        }
    }
}

fn chain(name: &str) -> Chain<'static> {
    Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.to_string().into(),
        ..Chain::default()
    }
}

fn nf_rule<'a>(chain: &str, statements: Vec<Statement<'a>>) -> NfRule<'a> {
    NfRule {
        family: NfFamily::IP,
        table: TABLE.into(),
        chain: chain.to_string().into(),
        expr: Cow::Owned(statements),
        ..NfRule::default()
    }
}

fn element(name: &str, elements: Vec<Expression<'static>>) -> Element<'static> {
    Element {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.to_string().into(),
        elem: Cow::Owned(elements),
    }
}

fn affinity_set(name: &str, timeout: u32) -> Set<'static> {
    Set {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.to_string().into(),
        set_type: SetTypeValue::Single(SetType::Ipv4Addr),
        flags: Some(HashSet::from([SetFlag::Timeout])),
        timeout: Some(timeout),
        ..Set::default()
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn l4proto() -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::L4proto,
    }))
}

fn concat(parts: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(parts))
}

fn vmap(key: Expression<'static>, map: &str) -> Statement<'static> {
    Statement::VerdictMap(VerdictMap {
        key,
        data: Expression::String(format!("@{map}").into()),
    })
}

/// `fib <flag> type local`: the address is one of this host's.
fn fib_local(flag: FibFlag) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([flag]),
        })),
        right: Expression::String("local".into()),
        op: Operator::EQ,
    })
}

fn address_key(key: &AddressKey) -> Expression<'static> {
    let (address, protocol, port) = key;
    concat(vec![
        Expression::String(address.to_string().into()),
        Expression::String(protocol.as_str().into()),
        Expression::Number(u32::from(*port)),
    ])
}

fn port_key(key: &PortKey) -> Expression<'static> {
    let (protocol, port) = key;
    concat(vec![
        Expression::String(protocol.as_str().into()),
        Expression::Number(u32::from(*port)),
    ])
}

fn goto(chain: &str) -> Expression<'static> {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: chain.to_string().into(),
    }))
}

fn jump(chain: &str) -> Expression<'static> {
    Expression::Verdict(Verdict::Jump(JumpTarget {
        target: chain.to_string().into(),
    }))
}

fn target(target: &Target) -> Expression<'static> {
    match target {
        Target::Reject => goto(REJECT),
        Target::Drop => goto(DROP),
    }
}

fn matches(
    left: Expression<'static>,
    right: Expression<'static>,
    op: Operator,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

/// One per-Service rule as nftables statements.
fn statements(rule: &Rule) -> Vec<Statement<'static>> {
    let mark = || {
        Statement::Jump(JumpTarget {
            target: MARK_FOR_MASQUERADE.into(),
        })
    };
    let goto_chain = |chain: &str| {
        Statement::Goto(JumpTarget {
            target: chain.to_string().into(),
        })
    };
    let address = |ip: &Ipv4Addr| Expression::String(ip.to_string().into());
    let protocol = |p: &Protocol| Expression::String(p.as_str().into());
    match rule {
        Rule::MasqueradeFromOutside {
            address: ip,
            protocol: p,
            port,
            cluster_cidr,
        } => vec![
            matches(payload("ip", "daddr"), address(ip), Operator::EQ),
            matches(l4proto(), protocol(p), Operator::EQ),
            matches(
                payload("th", "dport"),
                Expression::Number(u32::from(*port)),
                Operator::EQ,
            ),
            matches(
                payload("ip", "saddr"),
                Expression::Named(NamedExpression::Prefix(Prefix {
                    addr: Box::new(address(&cluster_cidr.network())),
                    len: u32::from(cluster_cidr.prefix_len()),
                })),
                Operator::NEQ,
            ),
            mark(),
        ],
        Rule::MasqueradeFrom(ip) => vec![
            matches(payload("ip", "saddr"), address(ip), Operator::EQ),
            mark(),
        ],
        Rule::Masquerade => vec![mark()],
        Rule::MasqueradeFromNode => vec![fib_local(FibFlag::Saddr), mark()],
        Rule::FromNodeGoto(chain) => vec![fib_local(FibFlag::Saddr), goto_chain(chain)],
        Rule::Sticky { set, chain } => vec![
            matches(
                payload("ip", "saddr"),
                Expression::String(format!("@{set}").into()),
                Operator::EQ,
            ),
            goto_chain(chain),
        ],
        Rule::Remember { set } => vec![Statement::Set(nftables::stmt::Set {
            op: SetOp::Update,
            elem: payload("ip", "saddr"),
            set: format!("@{set}").into(),
        })],
        Rule::Spread(chains) => vec![Statement::VerdictMap(VerdictMap {
            key: Expression::Named(NamedExpression::Numgen(Numgen {
                mode: NgMode::Random,
                ng_mod: u32::try_from(chains.len()).unwrap_or(u32::MAX),
                offset: None,
            })),
            data: Expression::Named(NamedExpression::Set(
                chains
                    .iter()
                    .zip(0u32..)
                    .map(|(chain, i)| SetItem::Mapping(Expression::Number(i), goto(chain)))
                    .collect(),
            )),
        })],
        Rule::Goto(chain) => vec![goto_chain(chain)],
        Rule::Allow(allow) => {
            let field = match allow.peer {
                Peer::Source => "saddr",
                Peer::Destination => "daddr",
            };
            let mut out = Vec::new();
            if let Some(addresses) = &allow.addresses {
                out.push(matches(
                    payload("ip", field),
                    cidrs(addresses),
                    Operator::EQ,
                ));
            }
            if !allow.except.is_empty() {
                out.push(matches(
                    payload("ip", field),
                    cidrs(&allow.except),
                    Operator::NEQ,
                ));
            }
            if let Some(p) = &allow.protocol {
                out.push(matches(l4proto(), protocol(p), Operator::EQ));
                if !allow.ports.is_empty() {
                    let ports = allow
                        .ports
                        .iter()
                        .map(|(start, end)| {
                            if start == end {
                                SetItem::Element(Expression::Number(u32::from(*start)))
                            } else {
                                SetItem::Element(Expression::Range(Box::new(Range {
                                    range: [
                                        Expression::Number(u32::from(*start)),
                                        Expression::Number(u32::from(*end)),
                                    ],
                                })))
                            }
                        })
                        .collect();
                    out.push(matches(
                        payload("th", "dport"),
                        Expression::Named(NamedExpression::Set(ports)),
                        Operator::EQ,
                    ));
                }
            }
            out.push(Statement::Return(None));
            out
        }
        Rule::AllowPairs { protocol: p, pairs } => vec![
            matches(l4proto(), protocol(p), Operator::EQ),
            matches(
                concat(vec![payload("ip", "daddr"), payload("th", "dport")]),
                Expression::Named(NamedExpression::Set(
                    pairs
                        .iter()
                        .map(|(ip, port)| {
                            SetItem::Element(concat(vec![
                                address(ip),
                                Expression::Number(u32::from(*port)),
                            ]))
                        })
                        .collect(),
                )),
                Operator::EQ,
            ),
            Statement::Return(None),
        ],
        // Refused at once, as the guide shows ("Connection refused").
        Rule::Deny => vec![goto_chain(REJECT)],
        Rule::Dnat {
            protocol: p,
            address: ip,
            port,
        } => vec![
            matches(l4proto(), protocol(p), Operator::EQ),
            Statement::DNAT(Some(NAT {
                addr: Some(address(ip)),
                family: None,
                port: Some(Expression::Number(u32::from(*port))),
                flags: None,
            })),
        ],
    }
}

/// An anonymous set of addresses and networks.
fn cidrs(cidrs: &BTreeSet<Ipv4Cidr>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        cidrs
            .iter()
            .map(|c| {
                let address = Expression::String(c.network().to_string().into());
                SetItem::Element(if c.prefix_len() == 32 {
                    address
                } else {
                    Expression::Named(NamedExpression::Prefix(Prefix {
                        addr: Box::new(address),
                        len: u32::from(c.prefix_len()),
                    }))
                })
            })
            .collect(),
    ))
}

/// Deletes the table, whether it exists or not.
pub fn delete_table() -> Vec<Value> {
    let mut out = Commands::default();
    let table = || {
        NfListObject::Table(Table {
            family: NfFamily::IP,
            name: TABLE.into(),
            handle: None,
        })
    };
    out.add(table());
    out.delete(table());
    out.0
}

/// The payload for `nft -j -f -`.
pub fn payload_of(commands: Vec<Value>) -> String {
    json!({ "nftables": commands }).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ruleset(endpoints: &[&str]) -> Ruleset {
        let vip: Ipv4Addr = "10.96.0.20".parse().unwrap();
        let mut rules = Ruleset::default();
        let chains: Vec<String> = endpoints.iter().map(|e| format!("ep-x/{e}")).collect();
        for (chain, e) in chains.iter().zip(endpoints) {
            rules.chains.insert(
                chain.clone(),
                vec![Rule::Dnat {
                    protocol: Protocol::Tcp,
                    address: e.parse().unwrap(),
                    port: 80,
                }],
            );
        }
        rules
            .chains
            .insert("svc-x".into(), vec![Rule::Spread(chains)]);
        rules
            .services
            .insert((vip, Protocol::Tcp, 80), "svc-x".into());
        rules.cluster_ips.insert(vip);
        rules
    }

    fn verbs(commands: &[Value]) -> Vec<String> {
        commands
            .iter()
            .map(|c| {
                let (verb, object) = c.as_object().unwrap().iter().next().unwrap();
                let (kind, body) = object.as_object().unwrap().iter().next().unwrap();
                let name = body
                    .get("name")
                    .or_else(|| body.get("chain"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                format!("{verb} {kind} {name}")
            })
            .collect()
    }

    #[test]
    fn the_first_sync_replaces_any_earlier_table_in_one_transaction() {
        let commands = transaction(None, &ruleset(&["10.244.1.5"]));
        let verbs = verbs(&commands);
        assert_eq!(
            &verbs[..3],
            ["add table shoal", "delete table shoal", "add table shoal"]
        );
        assert!(verbs.contains(&"add map service-ips".to_string()));
        assert!(verbs.contains(&"add chain svc-x".to_string()));
        assert!(verbs.contains(&"add element service-ips".to_string()));
    }

    #[test]
    fn an_unchanged_ruleset_is_an_empty_transaction() {
        let rules = ruleset(&["10.244.1.5", "10.244.2.7"]);
        assert!(transaction(Some(&rules), &rules.clone()).is_empty());
    }

    #[test]
    fn a_changed_endpoint_rewrites_only_its_chains() {
        let before = ruleset(&["10.244.1.5", "10.244.2.7"]);
        let after = ruleset(&["10.244.1.5", "10.244.2.9"]);
        let verbs = verbs(&transaction(Some(&before), &after));
        assert_eq!(
            verbs,
            [
                "add chain ep-x/10.244.2.9",
                "add rule ep-x/10.244.2.9",
                "flush chain svc-x",
                "add rule svc-x",
                "flush chain ep-x/10.244.2.7",
                "delete chain ep-x/10.244.2.7",
            ]
        );
    }

    #[test]
    fn a_service_going_away_loses_its_elements_before_its_chains() {
        let before = ruleset(&["10.244.1.5"]);
        let verbs = verbs(&transaction(Some(&before), &Ruleset::default()));
        let element = verbs
            .iter()
            .position(|v| v == "delete element service-ips")
            .unwrap();
        let chain = verbs
            .iter()
            .position(|v| v == "delete chain svc-x")
            .unwrap();
        assert!(element < chain, "{verbs:?}");
        assert!(verbs.contains(&"delete element cluster-ips".to_string()));
    }

    #[test]
    fn map_elements_are_key_verdict_pairs() {
        let commands = transaction(Some(&Ruleset::default()), &ruleset(&["10.244.1.5"]));
        let element = commands
            .iter()
            .find(|c| c["add"]["element"]["name"] == "service-ips")
            .unwrap();
        assert_eq!(
            element["add"]["element"]["elem"],
            serde_json::json!([[{"concat": ["10.96.0.20", "tcp", 80]}, {"goto": {"target": "svc-x"}}]])
        );
    }
}
