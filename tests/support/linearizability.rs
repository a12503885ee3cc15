//! Porcupine-style linearizability checker for a key-value store.
//!
//! The model is a register per key: every key starts absent (`None`), `Put`
//! overwrites it, `Get` observes it and `Cas` ("if value == expected then put
//! new") conditionally overwrites it. Because operations on different keys
//! never interact in this model, the history is partitioned by key and each
//! key is checked on its own (as Porcupine's partitioned KV model does); this
//! keeps the search space exponential only in the concurrency *per key*.
//!
//! The search is the Wing & Gong algorithm with Lowe's memoisation, laid out
//! the way Porcupine does it: call/return events sorted by time in a doubly
//! linked list, a backtracking stack of linearised calls, and a cache of
//! `(set of linearised ops, model state)` pairs that were already explored so
//! that equivalent interleavings are not searched twice.
//!
//! Operations whose outcome is unknown (the client saw an error or timeout) have
//! no return event: they may take effect at any point after their call, or
//! never. "Never" needs no special modelling, because an unknown op that is
//! left unlinearised at the end is equivalent to one linearised after every
//! other op. Unknown `Get`s carry no information and are dropped up front.
//!
//! The file depends only on `std` so integration tests can include it with
//! `#[path = "support/linearizability.rs"] mod linearizability;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What a client asked the store to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the key's current value.
    Get,
    /// Overwrite the key's value.
    Put(String),
    /// Transaction "if value == expected (None = key absent) then put new".
    Cas { expected: Option<String>, new: String },
}

/// What the client observed in response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The value read (`None` = key absent).
    Get(Option<String>),
    /// The put was acknowledged.
    Put,
    /// Whether the comparison held (and therefore whether the write happened).
    Cas(bool),
    /// The client got an error or timeout: the operation may or may not have
    /// taken effect. Its return time is treated as infinity.
    Unknown,
}

/// One client operation as recorded by the test harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub input: Input,
    pub output: Output,
    /// Invocation time, in ns since the start of the test.
    pub call: u64,
    /// Response time, in ns since the start of the test. Ignored (treated as
    /// infinity) when `output` is `Output::Unknown`; [`UNKNOWN_RETURN`] is the
    /// conventional value to record there.
    pub ret: u64,
}

/// Verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's sub-history is linearisable.
    Ok,
    /// The sub-history of `key` is not linearisable (or contains a malformed
    /// operation, in which case `detail` starts with "malformed operation").
    /// `detail` describes the shortest failing prefix and the ops involved.
    Illegal { key: String, detail: String },
    /// No key was found illegal, but at least one key could not be decided
    /// before the timeout.
    Timeout,
}

impl CheckResult {
    /// Convenience for `assert!(check(..).is_ok(), ..)`.
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }
}

/// Conventional `ret` value for operations whose output is `Output::Unknown`.
pub const UNKNOWN_RETURN: u64 = u64::MAX;

/// Upper bound on the extra time spent shrinking a failing history to its
/// shortest failing prefix. Shrinking only improves the report, so it must not
/// be allowed to turn a quick "Illegal" into a long wait.
const MINIMISE_BUDGET: Duration = Duration::from_secs(5);

/// How many search steps run between two clock reads; reading the clock every
/// step would dominate the cost of a step.
const DEADLINE_CHECK_INTERVAL: u64 = 1024;

/// At most this many linearised ops / pending ops are listed in a report, so a
/// failure deep into a long history still yields a readable message.
const REPORT_LIMIT: usize = 20;

/// Checks that `history` is linearisable with respect to a per-key register.
///
/// Keys are checked one after another in lexicographic order, sharing one
/// deadline. The first illegal key is reported even if an earlier key timed
/// out, because an "Illegal" verdict is definitive while a timeout is not.
pub fn check(history: &[Operation], timeout: Duration) -> CheckResult {
    let deadline = Instant::now().checked_add(timeout);

    // Partition by key; BTreeMap makes the checking order (and therefore which
    // of several bad keys gets reported) deterministic.
    let mut partitions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        partitions.entry(op.key.as_str()).or_default().push(i);
    }

    // Build (and thereby validate) every partition before searching, so a
    // malformed history is rejected no matter where the bad op sits.
    let mut keyed = Vec::with_capacity(partitions.len());
    for (key, idxs) in &partitions {
        match KeyHistory::build(key, history, idxs) {
            Ok(kh) => keyed.push(kh),
            Err(detail) => {
                return CheckResult::Illegal {
                    key: (*key).to_string(),
                    detail,
                }
            }
        }
    }

    let mut timed_out = false;
    for kh in &keyed {
        match search(&kh.ops, deadline) {
            Outcome::Linearizable => {}
            Outcome::TimedOut => timed_out = true,
            Outcome::Violation(failure) => {
                let detail = kh.explain(history, failure, deadline);
                return CheckResult::Illegal {
                    key: kh.key.to_string(),
                    detail,
                };
            }
        }
    }
    if timed_out {
        CheckResult::Timeout
    } else {
        CheckResult::Ok
    }
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

/// Model state of one key: 0 = absent, otherwise 1 + index of an interned
/// value. Interning makes states `Copy` and makes cache keys cheap to compare.
type State = u32;
const ABSENT: State = 0;

/// An operation's input and output folded into the transition it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Effect {
    /// A `Get` that returned this value.
    Read(State),
    /// A `Put` of this value (acknowledged or not: either way, if it takes
    /// effect it simply overwrites).
    Write(State),
    /// A `Cas`; `outcome` is `None` when the client never learnt it.
    Cas {
        expected: State,
        new: State,
        outcome: Option<bool>,
    },
}

impl Effect {
    /// The state after applying this op in state `s`, or `None` if the op's
    /// recorded output is impossible in state `s`.
    fn apply(self, s: State) -> Option<State> {
        match self {
            Effect::Read(v) => (s == v).then_some(s),
            Effect::Write(v) => Some(v),
            Effect::Cas {
                expected,
                new,
                outcome,
            } => {
                let matches = s == expected;
                match outcome {
                    Some(true) => matches.then_some(new),
                    Some(false) => (!matches).then_some(s),
                    // Atomicity still forces the outcome once the op is
                    // placed, so the unknown case stays deterministic.
                    None => Some(if matches { new } else { s }),
                }
            }
        }
    }
}

/// One op of a single key's history, ready for the search.
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index into the caller's `history`, used for reporting.
    hist: usize,
    call: u64,
    /// `None` = unknown outcome, i.e. return time infinity.
    ret: Option<u64>,
    effect: Effect,
}

/// The sub-history of one key plus the value table its states refer to.
struct KeyHistory<'a> {
    key: &'a str,
    ops: Vec<KeyOp>,
    values: Vec<&'a str>,
}

impl<'a> KeyHistory<'a> {
    /// Converts the ops at `idxs` (all on `key`) into `KeyOp`s, dropping
    /// unknown `Get`s. Errors describe the first malformed op.
    fn build(key: &'a str, history: &'a [Operation], idxs: &[usize]) -> Result<Self, String> {
        let mut interned: HashMap<&'a str, State> = HashMap::new();
        let mut values: Vec<&'a str> = Vec::new();
        let mut intern = |v: Option<&'a str>| -> State {
            match v {
                None => ABSENT,
                Some(s) => *interned.entry(s).or_insert_with(|| {
                    values.push(s);
                    // values.len() >= 1 here, so the id is never ABSENT.
                    values.len() as State
                }),
            }
        };

        let mut ops = Vec::with_capacity(idxs.len());
        for &i in idxs {
            let op = &history[i];
            let effect = match (&op.input, &op.output) {
                // A read with no answer tells us nothing.
                (Input::Get, Output::Unknown) => continue,
                (Input::Get, Output::Get(v)) => Effect::Read(intern(v.as_deref())),
                (Input::Put(v), Output::Put | Output::Unknown) => Effect::Write(intern(Some(v))),
                (Input::Cas { expected, new }, Output::Cas(_) | Output::Unknown) => Effect::Cas {
                    expected: intern(expected.as_deref()),
                    new: intern(Some(new)),
                    outcome: match op.output {
                        Output::Cas(ok) => Some(ok),
                        _ => None,
                    },
                },
                _ => {
                    return Err(format!(
                        "malformed operation #{i}: input {:?} cannot produce output {:?}",
                        op.input, op.output
                    ))
                }
            };
            let ret = match op.output {
                Output::Unknown => None,
                _ if op.ret < op.call => {
                    return Err(format!(
                        "malformed operation #{i}: returns at {}ns before its call at {}ns",
                        op.ret, op.call
                    ))
                }
                _ => Some(op.ret),
            };
            ops.push(KeyOp {
                hist: i,
                call: op.call,
                ret,
                effect,
            });
        }
        Ok(KeyHistory { key, ops, values })
    }

    fn state_name(&self, s: State) -> String {
        match s {
            ABSENT => "None".to_string(),
            id => match self.values.get(id as usize - 1) {
                Some(v) => format!("Some({v:?})"),
                None => format!("<state {id}>"),
            },
        }
    }

    /// Shrinks a known violation to the shortest failing prefix (within the
    /// time budget) and renders it as a human-readable report.
    fn explain(&self, history: &[Operation], full: Failure, deadline: Option<Instant>) -> String {
        let budget_end = Instant::now().checked_add(MINIMISE_BUDGET);
        let shrink_deadline = match (deadline, budget_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        // Candidate prefixes end at a response. Linearisability is
        // prefix-closed (see `prefix_at`), so "prefix ending at cuts[i] fails"
        // is monotone in i and binary search finds the shortest one.
        let mut cuts: Vec<u64> = self.ops.iter().filter_map(|o| o.ret).collect();
        cuts.sort_unstable();
        cuts.dedup();

        // The whole history is equivalent to the prefix ending at the last
        // response: later events are calls of unknown ops, which can always be
        // placed at the very end.
        let mut best_cut = cuts.last().copied();
        let mut best_ops = self.ops.clone();
        let mut best_failure = full;
        let mut shrunk = true;
        if !cuts.is_empty() {
            let (mut lo, mut hi) = (0, cuts.len() - 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let sub = prefix_at(&self.ops, cuts[mid]);
                match search(&sub, shrink_deadline) {
                    Outcome::Violation(f) => {
                        hi = mid;
                        best_cut = Some(cuts[mid]);
                        best_ops = sub;
                        best_failure = f;
                    }
                    Outcome::Linearizable => lo = mid + 1,
                    Outcome::TimedOut => {
                        shrunk = false;
                        break;
                    }
                }
            }
        }
        self.render(history, best_cut, shrunk, &best_ops, &best_failure)
    }

    fn render(
        &self,
        history: &[Operation],
        cut: Option<u64>,
        shrunk: bool,
        ops: &[KeyOp],
        failure: &Failure,
    ) -> String {
        let mut out = String::new();
        let describe = |k: usize| describe_op(history, ops[k].hist, cut);
        let _ = writeln!(
            out,
            "key {:?}: history is not linearizable ({} ops on this key).",
            self.key,
            self.ops.len()
        );
        if let Some(t) = cut {
            let enders: Vec<String> = ops
                .iter()
                .filter(|o| o.ret == Some(t))
                .map(|o| format!("#{}", o.hist))
                .collect();
            let prefix_len = self.ops.iter().filter(|o| o.call <= t).count();
            let _ = writeln!(
                out,
                "{} non-linearizable prefix: the {prefix_len} ops called up to t={t}ns, ending with the response of {}.",
                if shrunk { "Shortest" } else { "Shortest found (shrinking stopped at its time budget)" },
                enders.join(", ")
            );
            let _ = writeln!(
                out,
                "(ops responding after t={t}ns are treated as pending; such reads are ignored)"
            );
        }
        let _ = writeln!(
            out,
            "Op whose response cannot be explained: {}",
            describe(failure.blocked)
        );
        if history
            .get(ops[failure.blocked].hist)
            .is_some_and(|o| o.output == Output::Unknown)
        {
            let _ = writeln!(
                out,
                "(its outcome is unknown, but its value was observed, so it must have taken effect before the first observer returned)"
            );
        }

        let lin = &failure.linearization;
        let _ = writeln!(
            out,
            "Longest valid linearization found before it ({} ops{}), value after each op:",
            lin.len(),
            if lin.len() > REPORT_LIMIT {
                format!(", last {REPORT_LIMIT} shown")
            } else {
                String::new()
            }
        );
        let mut state = ABSENT;
        let skip = lin.len().saturating_sub(REPORT_LIMIT);
        for (pos, &k) in lin.iter().enumerate() {
            // Every prefix op was accepted by the search in exactly this
            // state, so apply() cannot fail; keep the state if it somehow does.
            state = ops[k].effect.apply(state).unwrap_or(state);
            if pos >= skip {
                let _ = writeln!(
                    out,
                    "  {:>4}. {}  => {}",
                    pos + 1,
                    describe(k),
                    self.state_name(state)
                );
            }
        }
        let _ = writeln!(
            out,
            "Value at that point: {}",
            self.state_name(state)
        );
        if failure.pending.is_empty() {
            let _ = writeln!(out, "No other op was pending at that point.");
        } else {
            let _ = writeln!(
                out,
                "Ops pending at that point, none of which leads to a valid linearization{}:",
                if failure.pending.len() > REPORT_LIMIT {
                    format!(" (first {REPORT_LIMIT} of {} shown)", failure.pending.len())
                } else {
                    String::new()
                }
            );
            for &k in failure.pending.iter().take(REPORT_LIMIT) {
                let _ = writeln!(out, "  {}", describe(k));
            }
        }
        out
    }
}

/// The sub-history an observer would have recorded had the test stopped at
/// time `t`: ops called after `t` are gone, and ops still running at `t`
/// become pending — writes with unknown outcome, reads dropped.
///
/// If the full history is linearisable so is every such prefix (take the full
/// linearisation, drop the removed ops: completed ops all precede the dropped
/// late calls, and pending writes accept any state), which is what makes the
/// binary search in `explain` sound.
fn prefix_at(ops: &[KeyOp], t: u64) -> Vec<KeyOp> {
    ops.iter()
        .filter(|o| o.call <= t)
        .filter_map(|o| match o.ret {
            Some(r) if r <= t => Some(*o),
            _ => {
                let effect = match o.effect {
                    Effect::Read(_) => return None,
                    Effect::Write(v) => Effect::Write(v),
                    Effect::Cas { expected, new, .. } => Effect::Cas {
                        expected,
                        new,
                        outcome: None,
                    },
                };
                Some(KeyOp {
                    ret: None,
                    effect,
                    ..*o
                })
            }
        })
        .collect()
}

fn describe_op(history: &[Operation], i: usize, cut: Option<u64>) -> String {
    let Some(op) = history.get(i) else {
        return format!("#{i} <out of range>");
    };
    let input = match &op.input {
        Input::Get => "Get".to_string(),
        Input::Put(v) => format!("Put({v:?})"),
        Input::Cas { expected, new } => format!("Cas(if {expected:?} then {new:?})"),
    };
    let output = match &op.output {
        Output::Get(v) => format!("{v:?}"),
        Output::Put => "ok".to_string(),
        Output::Cas(true) => "succeeded".to_string(),
        Output::Cas(false) => "failed".to_string(),
        Output::Unknown => "unknown".to_string(),
    };
    let ret = match op.output {
        Output::Unknown => "inf".to_string(),
        _ => format!("{}ns", op.ret),
    };
    let late = match (cut, &op.output) {
        (Some(t), o) if *o != Output::Unknown && op.ret > t => " (pending at the cut)",
        _ => "",
    };
    format!(
        "#{i} client {}: {input} -> {output} [call {}ns, ret {ret}]{late}",
        op.client, op.call
    )
}

// ---------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or return event in the time-ordered doubly linked list.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Index into the `KeyOp` slice being searched.
    op: usize,
    is_call: bool,
    /// For a call: its return node, or NIL for an unknown-outcome op.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The event list. Index `HEAD` is a sentinel so that unlinking never needs to
/// special-case the first real event.
struct EventList {
    nodes: Vec<Node>,
}

impl EventList {
    fn new(ops: &[KeyOp]) -> Self {
        // (time, 0 = call / 1 = return, op). At equal times calls sort before
        // returns, i.e. touching intervals count as concurrent: recorded
        // timestamps are too coarse to prove an order between them.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, 0, i));
            if let Some(r) = op.ret {
                events.push((r, 1, i));
            }
        }
        events.sort_unstable();

        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            op: NIL,
            is_call: false,
            partner: NIL,
            prev: NIL,
            next: if events.is_empty() { NIL } else { 1 },
        });
        let mut return_node = vec![NIL; ops.len()];
        for (k, &(_, kind, op)) in events.iter().enumerate() {
            let idx = k + 1;
            if kind == 1 {
                return_node[op] = idx;
            }
            nodes.push(Node {
                op,
                is_call: kind == 0,
                partner: NIL,
                prev: idx - 1,
                next: if idx < events.len() { idx + 1 } else { NIL },
            });
        }
        for node in nodes.iter_mut().skip(1) {
            if node.is_call {
                node.partner = return_node[node.op];
            }
        }
        EventList { nodes }
    }

    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    fn unlink(&mut self, i: usize) {
        let Node { prev, next, .. } = self.nodes[i];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    /// Re-inserts a node removed by `unlink`; valid because removals are
    /// undone in LIFO order (dancing links), so its neighbours are intact.
    fn relink(&mut self, i: usize) {
        let Node { prev, next, .. } = self.nodes[i];
        self.nodes[prev].next = i;
        if next != NIL {
            self.nodes[next].prev = i;
        }
    }

    /// Removes a linearised op (call and return) from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.nodes[call].partner;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].partner;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Why the search gave up, from the deepest point it reached.
#[derive(Debug)]
struct Failure {
    /// Ops (indices into the searched slice) of the longest valid partial
    /// linearisation, in linearisation order.
    linearization: Vec<usize>,
    /// The op whose response was reached without being able to linearise it.
    blocked: usize,
    /// Other ops that were called but not linearised at that point.
    pending: Vec<usize>,
}

enum Outcome {
    Linearizable,
    Violation(Failure),
    TimedOut,
}

/// State standing for "some value no operation ever looks at" (see `prepare`).
const JUNK: State = State::MAX;

/// Rewrites one key's ops into an equivalent history that is much cheaper to
/// search. Indices are preserved, so results map back to the input slice.
///
/// Unknown-outcome ops are what makes plain Wing & Gong explode: each one
/// stays pending forever, doubling the number of `(linearised set, state)`
/// configurations from its call onwards. Two equivalence-preserving rewrites
/// remove most of them when values are unique (the usual test workload):
///
/// * **Observed unknown writes become known.** If value `v` has exactly one
///   writer `W` whose outcome is unknown, and some completed op observed `v`
///   (a `Get` returning it or a successful `Cas` expecting it), then `W` must
///   have taken effect — as a successful write — before that observer
///   returned. So `W` gets a return time equal to the earliest such response,
///   and an unknown `Cas` becomes a successful one. (Skipped if that response
///   precedes `W`'s call; the search then reports the impossible read.)
/// * **Unreferenced values collapse to `JUNK`.** A value that no `Get`
///   returns and no `Cas` expects cannot be told apart from any other such
///   value by any op, so all of them are the same model state. Unknown writes
///   of such values then become interchangeable, which the search exploits.
fn prepare(ops: &[KeyOp]) -> Vec<KeyOp> {
    let mut referenced: HashSet<State> = HashSet::new();
    let mut first_observed: HashMap<State, u64> = HashMap::new();
    let mut writers: HashMap<State, usize> = HashMap::new();
    let mut observe = |v: State, ret: Option<u64>| {
        if let Some(r) = ret {
            let t = first_observed.entry(v).or_insert(r);
            *t = (*t).min(r);
        }
    };
    for o in ops {
        match o.effect {
            Effect::Read(v) => {
                referenced.insert(v);
                observe(v, o.ret);
            }
            Effect::Write(v) => *writers.entry(v).or_default() += 1,
            Effect::Cas {
                expected,
                new,
                outcome,
            } => {
                referenced.insert(expected);
                *writers.entry(new).or_default() += 1;
                if outcome == Some(true) {
                    observe(expected, o.ret);
                }
            }
        }
    }

    ops.iter()
        .map(|o| {
            let mut o = *o;
            let written = match &mut o.effect {
                Effect::Read(_) => return o,
                Effect::Write(v) => v,
                Effect::Cas { new, .. } => new,
            };
            let v = *written;
            if !referenced.contains(&v) {
                *written = JUNK;
            }
            if o.ret.is_none() && writers.get(&v) == Some(&1) {
                if let Some(&seen) = first_observed.get(&v) {
                    if seen >= o.call {
                        o.ret = Some(seen);
                        if let Effect::Cas { outcome, .. } = &mut o.effect {
                            *outcome = Some(true);
                        }
                    }
                }
            }
            o
        })
        .collect()
}

/// Memo of explored configurations, with subsumption.
///
/// A configuration is (known ops linearised, unknown ops used, state). Known
/// ops must match exactly, but for the same known set and state, having used
/// *fewer* unknown ops is never worse: every continuation of the bigger set is
/// also available to the smaller one (unknown ops have no deadline). So a
/// configuration is skipped if an explored one with the same known set and
/// state used a subset of its unknown ops. This is what stops "apply this
/// unknown write or not" from multiplying the search space.
#[derive(Default)]
struct Cache {
    map: HashMap<Vec<u64>, Vec<(State, Vec<u64>)>>,
}

impl Cache {
    /// Records the configuration and returns true if it is not subsumed by an
    /// already explored one.
    fn insert(&mut self, known: &[u64], state: State, unknown: &[u64]) -> bool {
        match self.map.get_mut(known) {
            Some(list) => {
                if list
                    .iter()
                    .any(|(s, u)| *s == state && is_subset(u, unknown))
                {
                    return false;
                }
                // Entries subsumed by the new one can no longer prune anything
                // the new one would not.
                list.retain(|(s, u)| !(*s == state && is_subset(unknown, u)));
                list.push((state, unknown.to_vec()));
            }
            None => {
                self.map
                    .insert(known.to_vec(), vec![(state, unknown.to_vec())]);
            }
        }
        true
    }
}

fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

fn toggle(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1u64 << (i % 64);
}

/// Porcupine's `checkSingle`: depth-first search for a linearisation.
///
/// The candidates to linearise next are the pending calls that precede the
/// first remaining return event in the list. A candidate that the model
/// accepts and whose resulting configuration is new gets linearised (pushed,
/// lifted out of the list) and the search restarts with the new candidate
/// set. When every candidate has been tried, the op owning that first return
/// event cannot be placed, so the last choice is undone and the next
/// candidate after it is tried. The history is linearisable once every op
/// with a known response has been linearised; unknown ops may stay behind
/// (they "never happened").
///
/// Departures from Porcupine, none of which changes the verdict (they only
/// reorder or skip candidates in ways a shortest successful completion can
/// always be rearranged to follow):
/// * Candidates are tried in passes instead of plain call order:
///   0. the *urgent* op, i.e. the one whose response comes first;
///   1. other known ops after which the urgent op becomes applicable;
///   2. the remaining known ops;
///   3. unknown-outcome ops.
///
///   Porcupine's call order eagerly linearises every freshly called write, so
///   with many concurrent clients the state races ahead of slower reads and
///   the search drowns in backtracking. Serving the earliest deadline first
///   tracks the real order closely, and trying unknown ops last means the
///   configurations that use fewer of them are cached first and subsume the
///   rest (see `Cache`).
/// * An unknown op that would not change the state is never applied: leaving
///   it unused is at least as good.
/// * Unknown ops with identical effects are interchangeable, so only the
///   earliest-called unused one of each such group is a candidate.
fn search(ops: &[KeyOp], deadline: Option<Instant>) -> Outcome {
    let mut s = Searcher::new(prepare(ops));
    let mut pos = Pos::Restart;
    let mut best: Option<Failure> = None;
    let mut steps: u64 = 0;

    loop {
        if s.remaining_known == 0 {
            return Outcome::Linearizable;
        }
        if steps % DEADLINE_CHECK_INTERVAL == 0 {
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    return Outcome::TimedOut;
                }
            }
        }
        steps += 1;

        pos = match pos {
            Pos::Restart => {
                // `urgent` is NIL only when no return event is left, i.e.
                // when `remaining_known == 0`, handled above.
                let call = match s.urgent {
                    NIL => return Outcome::Linearizable,
                    op => s.call_node[op],
                };
                if s.try_linearize(call) {
                    Pos::Restart
                } else {
                    Pos::Walk(1, s.list.first())
                }
            }
            // The walk never steps past a return node, and one remains while
            // `remaining_known > 0`; NIL is unreachable but would mean success.
            Pos::Walk(_, NIL) => return Outcome::Linearizable,
            Pos::Walk(pass, entry) => {
                let node = s.list.nodes[entry];
                if node.is_call {
                    if s.pass_of(node.op) == Some(pass) && s.try_linearize(entry) {
                        Pos::Restart
                    } else {
                        Pos::Walk(pass, node.next)
                    }
                } else if pass < LAST_PASS {
                    Pos::Walk(pass + 1, s.list.first())
                } else {
                    // Dead end. Remember the deepest one: it is the most
                    // informative explanation if the whole search fails.
                    if best
                        .as_ref()
                        .is_none_or(|b| s.stack.len() > b.linearization.len())
                    {
                        best = Some(failure_at(&s.list, &s.stack, entry));
                    }
                    let Some(call) = s.undo() else {
                        // Nothing left to undo: no order explains this response.
                        return Outcome::Violation(match best {
                            Some(f) => f,
                            None => failure_at(&s.list, &s.stack, entry),
                        });
                    };
                    // Resume right after the undone candidate, in its pass.
                    match s.pass_of(s.list.nodes[call].op) {
                        Some(0) => Pos::Walk(1, s.list.first()),
                        Some(p) => Pos::Walk(p, s.list.nodes[call].next),
                        // Undone ops were applicable here, so they always have
                        // a pass; restarting the pass sequence would be safe.
                        None => Pos::Walk(1, s.list.first()),
                    }
                }
            }
        };
    }
}

/// Where the search loop is: about to try the urgent op, or walking the list
/// in a given pass from a given node.
#[derive(Clone, Copy)]
enum Pos {
    Restart,
    Walk(u8, usize),
}

const LAST_PASS: u8 = 3;

/// Mutable search state for one key.
struct Searcher {
    ops: Vec<KeyOp>,
    list: EventList,
    /// Call node of each op.
    call_node: Vec<usize>,
    /// Bit index of each op within `known_bits` or `unknown_bits`.
    slot: Vec<usize>,
    /// Groups of interchangeable unknown ops, each in call order. The earliest
    /// unused member is always the one taken, so the used members of a group
    /// are a prefix and `group_used` is its length.
    group_of: Vec<usize>,
    groups: Vec<Vec<usize>>,
    group_used: Vec<usize>,
    known_bits: Vec<u64>,
    unknown_bits: Vec<u64>,
    cache: Cache,
    /// (call node, state before it) for every linearised op, in order.
    stack: Vec<(usize, State)>,
    state: State,
    remaining_known: usize,
    /// Op owning the first return event still in the list, or NIL.
    urgent: usize,
}

impl Searcher {
    fn new(ops: Vec<KeyOp>) -> Self {
        let n = ops.len();
        let list = EventList::new(&ops);
        let mut call_node = vec![NIL; n];
        for (idx, node) in list.nodes.iter().enumerate().skip(1) {
            if node.is_call {
                call_node[node.op] = idx;
            }
        }

        let mut slot = vec![0usize; n];
        let (mut n_known, mut n_unknown) = (0, 0);
        for (i, o) in ops.iter().enumerate() {
            if o.ret.is_some() {
                slot[i] = n_known;
                n_known += 1;
            } else {
                slot[i] = n_unknown;
                n_unknown += 1;
            }
        }

        let mut group_of = vec![NIL; n];
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_by_effect: HashMap<Effect, usize> = HashMap::new();
        let mut unknown_ops: Vec<usize> = (0..n).filter(|&i| ops[i].ret.is_none()).collect();
        unknown_ops.sort_by_key(|&i| (ops[i].call, i));
        for i in unknown_ops {
            let g = *group_by_effect.entry(ops[i].effect).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
            group_of[i] = g;
        }

        let mut s = Searcher {
            group_used: vec![0; groups.len()],
            ops,
            list,
            call_node,
            slot,
            group_of,
            groups,
            known_bits: vec![0; n_known.div_ceil(64)],
            unknown_bits: vec![0; n_unknown.div_ceil(64)],
            cache: Cache::default(),
            stack: Vec::new(),
            state: ABSENT,
            remaining_known: n_known,
            urgent: NIL,
        };
        s.urgent = s.find_urgent();
        s
    }

    fn find_urgent(&self) -> usize {
        let mut i = self.list.first();
        while i != NIL {
            let node = self.list.nodes[i];
            if !node.is_call {
                return node.op;
            }
            i = node.next;
        }
        NIL
    }

    /// Which pass (see `search`) tries op `i` in the current configuration,
    /// or `None` if no pass does (not applicable, or skipped as redundant).
    fn pass_of(&self, i: usize) -> Option<u8> {
        let op = &self.ops[i];
        let next = op.effect.apply(self.state)?;
        if op.ret.is_none() {
            let g = self.group_of[i];
            let first_unused = self.groups[g].get(self.group_used[g]) == Some(&i);
            return (first_unused && next != self.state).then_some(3);
        }
        if i == self.urgent {
            return Some(0);
        }
        let enables_urgent = self
            .ops
            .get(self.urgent)
            .is_some_and(|u| u.effect.apply(next).is_some());
        Some(if enables_urgent { 1 } else { 2 })
    }

    /// Linearises the op whose call node is `call` if the model accepts it and
    /// the resulting configuration is not subsumed by an explored one.
    fn try_linearize(&mut self, call: usize) -> bool {
        let i = self.list.nodes[call].op;
        let op = self.ops[i];
        let Some(next) = op.effect.apply(self.state) else {
            return false;
        };
        let unknown = op.ret.is_none();
        let bits = if unknown { &mut self.unknown_bits } else { &mut self.known_bits };
        toggle(bits, self.slot[i]);
        if !self.cache.insert(&self.known_bits, next, &self.unknown_bits) {
            let bits = if unknown { &mut self.unknown_bits } else { &mut self.known_bits };
            toggle(bits, self.slot[i]);
            return false;
        }
        self.stack.push((call, self.state));
        self.state = next;
        self.list.lift(call);
        if unknown {
            self.group_used[self.group_of[i]] += 1;
        } else {
            self.remaining_known -= 1;
            self.urgent = self.find_urgent();
        }
        true
    }

    /// Undoes the most recent linearisation; returns its call node.
    fn undo(&mut self) -> Option<usize> {
        let (call, prev_state) = self.stack.pop()?;
        let i = self.list.nodes[call].op;
        self.state = prev_state;
        self.list.unlift(call);
        if self.ops[i].ret.is_none() {
            toggle(&mut self.unknown_bits, self.slot[i]);
            self.group_used[self.group_of[i]] -= 1;
        } else {
            toggle(&mut self.known_bits, self.slot[i]);
            self.remaining_known += 1;
            self.urgent = self.find_urgent();
        }
        Some(call)
    }
}

/// Snapshot of the search at a dead end (`ret_entry` is the return node that
/// could not be passed).
fn failure_at(list: &EventList, stack: &[(usize, State)], ret_entry: usize) -> Failure {
    let blocked = list.nodes[ret_entry].op;
    let mut pending = Vec::new();
    let mut i = list.first();
    while i != NIL && i != ret_entry {
        let n = list.nodes[i];
        if n.is_call && n.op != blocked {
            pending.push(n.op);
        }
        i = n.next;
    }
    Failure {
        linearization: stack.iter().map(|&(call, _)| list.nodes[call].op).collect(),
        blocked,
        pending,
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    fn op(client: usize, key: &str, input: Input, output: Output, call: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: key.to_string(),
            input,
            output,
            call,
            ret,
        }
    }
    fn put(c: usize, k: &str, v: &str, call: u64, ret: u64) -> Operation {
        op(c, k, Input::Put(v.into()), Output::Put, call, ret)
    }
    fn put_unknown(c: usize, k: &str, v: &str, call: u64) -> Operation {
        op(c, k, Input::Put(v.into()), Output::Unknown, call, UNKNOWN_RETURN)
    }
    fn get(c: usize, k: &str, v: Option<&str>, call: u64, ret: u64) -> Operation {
        op(c, k, Input::Get, Output::Get(v.map(str::to_string)), call, ret)
    }
    fn cas(c: usize, k: &str, exp: Option<&str>, new: &str, ok: bool, call: u64, ret: u64) -> Operation {
        let input = Input::Cas {
            expected: exp.map(str::to_string),
            new: new.into(),
        };
        op(c, k, input, Output::Cas(ok), call, ret)
    }
    fn cas_unknown(c: usize, k: &str, exp: Option<&str>, new: &str, call: u64) -> Operation {
        let input = Input::Cas {
            expected: exp.map(str::to_string),
            new: new.into(),
        };
        op(c, k, input, Output::Unknown, call, UNKNOWN_RETURN)
    }

    #[track_caller]
    fn assert_ok(h: &[Operation]) {
        let r = check(h, T);
        assert_eq!(r, CheckResult::Ok, "expected Ok for {h:#?}");
    }
    #[track_caller]
    fn assert_illegal(h: &[Operation]) -> (String, String) {
        match check(h, T) {
            CheckResult::Illegal { key, detail } => (key, detail),
            other => panic!("expected Illegal, got {other:?} for {h:#?}"),
        }
    }

    #[test]
    fn empty_history_is_ok() {
        assert_ok(&[]);
    }

    #[test]
    fn sequential_history_ok() {
        assert_ok(&[
            get(0, "k", None, 0, 1),
            put(0, "k", "a", 2, 3),
            get(1, "k", Some("a"), 4, 5),
            cas(1, "k", Some("a"), "b", true, 6, 7),
            cas(0, "k", Some("a"), "c", false, 8, 9),
            get(0, "k", Some("b"), 10, 11),
            cas(0, "k", None, "z", false, 12, 13),
        ]);
    }

    #[test]
    fn concurrent_put_get_either_outcome_ok() {
        // The read overlaps the write, so it may see either value.
        assert_ok(&[put(0, "k", "a", 0, 10), get(1, "k", None, 5, 15)]);
        assert_ok(&[put(0, "k", "a", 0, 10), get(1, "k", Some("a"), 5, 15)]);
        // Read entirely inside the write's interval, both ways too.
        assert_ok(&[put(0, "k", "a", 0, 100), get(1, "k", Some("a"), 10, 20)]);
        assert_ok(&[put(0, "k", "a", 0, 100), get(1, "k", None, 10, 20)]);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        assert_ok(&[put(0, "k", "a", 0, 10), get(1, "k", None, 10, 20)]);
    }

    #[test]
    fn stale_read_after_completed_put_is_illegal() {
        let (key, detail) = assert_illegal(&[
            put(0, "k", "a", 0, 10),
            put(0, "k", "b", 20, 30),
            get(1, "k", Some("a"), 40, 50),
        ]);
        assert_eq!(key, "k");
        assert!(detail.contains("#2"), "{detail}");
        assert_illegal(&[put(0, "k", "a", 0, 10), get(1, "k", None, 20, 30)]);
    }

    #[test]
    fn two_cas_from_same_expected_value_is_illegal() {
        let base = put(0, "k", "0", 0, 10);
        // Sequential: the second CAS must see "1", not "0".
        assert_illegal(&[
            base.clone(),
            cas(1, "k", Some("0"), "1", true, 20, 30),
            cas(2, "k", Some("0"), "2", true, 40, 50),
        ]);
        // Overlapping: still only one of them can win.
        assert_illegal(&[
            base.clone(),
            cas(1, "k", Some("0"), "1", true, 20, 50),
            cas(2, "k", Some("0"), "2", true, 25, 45),
        ]);
        // Overlapping with one loser is fine, whichever read follows.
        assert_ok(&[
            base.clone(),
            cas(1, "k", Some("0"), "1", true, 20, 50),
            cas(2, "k", Some("0"), "2", false, 25, 45),
            get(0, "k", Some("1"), 60, 70),
        ]);
        // A CAS reporting failure although the value matched is illegal.
        assert_illegal(&[base, cas(1, "k", Some("0"), "1", false, 20, 30)]);
    }

    #[test]
    fn cas_on_absent_key() {
        assert_ok(&[
            cas(0, "k", None, "a", true, 0, 10),
            cas(1, "k", None, "b", false, 20, 30),
            get(1, "k", Some("a"), 40, 50),
        ]);
        assert_illegal(&[
            put(0, "k", "a", 0, 10),
            cas(1, "k", None, "b", true, 20, 30),
        ]);
    }

    #[test]
    fn unknown_put_later_observed_ok() {
        assert_ok(&[
            put(0, "k", "a", 0, 10),
            put_unknown(1, "k", "b", 20),
            get(2, "k", Some("a"), 30, 40),
            get(2, "k", Some("b"), 1_000, 1_010),
            get(0, "k", Some("b"), 2_000, 2_010),
        ]);
    }

    #[test]
    fn unknown_put_never_observed_ok() {
        assert_ok(&[
            put(0, "k", "a", 0, 10),
            put_unknown(1, "k", "b", 20),
            get(2, "k", Some("a"), 30, 40),
            get(2, "k", Some("a"), 1_000, 1_010),
            put(0, "k", "c", 2_000, 2_010),
            get(0, "k", Some("c"), 3_000, 3_010),
        ]);
    }

    #[test]
    fn unknown_put_cannot_be_undone_once_observed() {
        assert_illegal(&[
            put_unknown(1, "k", "b", 0),
            get(2, "k", Some("b"), 100, 110),
            get(2, "k", None, 200, 210),
        ]);
    }

    #[test]
    fn unknown_put_cannot_take_effect_before_its_call() {
        assert_illegal(&[get(0, "k", Some("b"), 0, 10), put_unknown(1, "k", "b", 20)]);
    }

    #[test]
    fn unknown_cas_may_or_may_not_apply() {
        let base = put(0, "k", "a", 0, 10);
        assert_ok(&[
            base.clone(),
            cas_unknown(1, "k", Some("a"), "b", 20),
            get(0, "k", Some("b"), 100, 110),
        ]);
        assert_ok(&[
            base.clone(),
            cas_unknown(1, "k", Some("a"), "b", 20),
            get(0, "k", Some("a"), 100, 110),
        ]);
        // Its expectation never holds, so it can never install "b".
        assert_illegal(&[
            base,
            cas_unknown(1, "k", Some("x"), "b", 20),
            get(0, "k", Some("b"), 100, 110),
        ]);
    }

    #[test]
    fn unknown_get_is_ignored() {
        assert_ok(&[
            put(0, "k", "a", 0, 10),
            op(1, "k", Input::Get, Output::Unknown, 20, UNKNOWN_RETURN),
            get(0, "k", Some("a"), 30, 40),
        ]);
    }

    #[test]
    fn read_of_value_never_written_is_illegal() {
        let (key, detail) = assert_illegal(&[
            put(0, "k", "a", 0, 10),
            get(1, "k", Some("ghost"), 5, 15),
        ]);
        assert_eq!(key, "k");
        assert!(detail.contains("ghost"), "{detail}");
    }

    #[test]
    fn needs_backtracking_to_find_illegal_order() {
        // Concurrent writes of a and b; reads observe a, b, a: impossible
        // because nothing writes a a second time.
        assert_illegal(&[
            put(0, "k", "a", 0, 100),
            put(1, "k", "b", 0, 100),
            get(2, "k", Some("a"), 10, 20),
            get(2, "k", Some("b"), 30, 40),
            get(2, "k", Some("a"), 50, 60),
        ]);
        // ... while a, then b, then b is fine (a before b).
        assert_ok(&[
            put(0, "k", "a", 0, 100),
            put(1, "k", "b", 0, 100),
            get(2, "k", Some("a"), 10, 20),
            get(2, "k", Some("b"), 30, 40),
            get(2, "k", Some("b"), 50, 60),
        ]);
        // b then a is fine too (the search must not commit to the first order).
        assert_ok(&[
            put(0, "k", "a", 0, 100),
            put(1, "k", "b", 0, 100),
            get(2, "k", Some("b"), 10, 20),
            get(2, "k", Some("a"), 30, 40),
        ]);
    }

    #[test]
    fn multi_key_reports_only_the_bad_key() {
        let (key, detail) = assert_illegal(&[
            put(0, "a", "1", 0, 10),
            put(1, "b", "1", 0, 10),
            put(2, "c", "1", 0, 10),
            get(0, "a", Some("1"), 20, 30),
            get(1, "b", None, 20, 30), // stale: b was written before
            get(2, "c", Some("1"), 20, 30),
            // A value written to another key is not visible here.
            get(0, "a", Some("1"), 40, 50),
        ]);
        assert_eq!(key, "b");
        assert!(detail.contains("key \"b\""), "{detail}");
        assert!(detail.contains("#4"), "{detail}");
    }

    #[test]
    fn keys_are_independent() {
        // Key b's value "x" would be stale for key a, but keys do not interact.
        assert_ok(&[
            put(0, "a", "x", 0, 10),
            put(0, "a", "y", 20, 30),
            put(1, "b", "x", 40, 50),
            get(1, "b", Some("x"), 60, 70),
            get(0, "a", Some("y"), 60, 70),
        ]);
    }

    #[test]
    fn malformed_ops_are_rejected() {
        let (key, detail) = assert_illegal(&[op(0, "k", Input::Get, Output::Put, 0, 1)]);
        assert_eq!(key, "k");
        assert!(detail.starts_with("malformed operation #0"), "{detail}");
        let (_, detail) = assert_illegal(&[put(0, "k", "a", 10, 5)]);
        assert!(detail.starts_with("malformed operation #0"), "{detail}");
    }

    #[test]
    fn zero_timeout_times_out() {
        let h = [put(0, "k", "a", 0, 10), get(1, "k", Some("a"), 5, 15)];
        assert_eq!(check(&h, Duration::ZERO), CheckResult::Timeout);
    }

    #[test]
    fn report_points_at_shortest_failing_prefix() {
        // The violation happens early; a long valid tail follows it. The
        // report must end the prefix at the bad read, not at the end.
        let mut h = vec![
            put(0, "k", "a", 0, 10),
            put(0, "k", "b", 20, 30),
            get(1, "k", Some("a"), 40, 50), // #2: stale
        ];
        for i in 0..200u64 {
            let t = 100 + i * 20;
            h.push(put(0, "k", &format!("v{i}"), t, t + 5));
            h.push(get(1, "k", Some(&format!("v{i}")), t + 10, t + 15));
        }
        let (_, detail) = assert_illegal(&h);
        assert!(detail.contains("ops called up to t=50ns"), "{detail}");
        assert!(
            detail.contains("Op whose response cannot be explained: #2 "),
            "{detail}"
        );
    }

    // --- randomised histories -------------------------------------------

    /// xorshift64*: deterministic, dependency-free randomness for tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Simulates `clients` sequential clients against an atomic store: each
    /// op takes effect at a random instant inside its interval, so the
    /// resulting history is linearisable by construction. `unknown_pct` of
    /// ops lose their response; half of those still take effect (possibly
    /// long after the client gave up).
    fn random_history(seed: u64, clients: usize, total_ops: usize, keys: &[&str], unknown_pct: u64) -> Vec<Operation> {
        let mut rng = Rng(seed.max(1));
        let mut cursor = vec![0u64; clients];
        let mut ops: Vec<Operation> = Vec::with_capacity(total_ops);
        let mut points: Vec<(u64, usize)> = Vec::new();
        let mut recent: HashMap<String, Vec<Option<String>>> = HashMap::new();
        for n in 0..total_ops {
            // Advance the client that is furthest behind, so generation order
            // roughly follows time and CAS expectations are plausible.
            let c = (0..clients).min_by_key(|&c| cursor[c]).unwrap_or(0);
            let key = keys[rng.below(keys.len() as u64) as usize];
            let call = cursor[c] + rng.below(10);
            let dur = 1 + rng.below(100);
            let input = match rng.below(10) {
                0..=3 => Input::Get,
                4..=7 => Input::Put(format!("v{n}")),
                _ => {
                    let r = recent.entry(key.to_string()).or_insert_with(|| vec![None]);
                    let pick = r.len() - 1 - rng.below(r.len().min(3) as u64) as usize;
                    Input::Cas {
                        expected: r[pick].clone(),
                        new: format!("v{n}"),
                    }
                }
            };
            if let Input::Put(v) | Input::Cas { new: v, .. } = &input {
                recent.entry(key.to_string()).or_insert_with(|| vec![None]).push(Some(v.clone()));
            }
            let unknown = rng.below(100) < unknown_pct;
            let (ret, point) = if unknown {
                let point = (rng.below(2) == 0).then(|| call + rng.below(1_000));
                (UNKNOWN_RETURN, point)
            } else {
                (call + dur, Some(call + rng.below(dur)))
            };
            cursor[c] = call + dur;
            if let Some(p) = point {
                points.push((p, ops.len()));
            }
            ops.push(op(c, key, input, Output::Unknown, call, ret));
        }
        points.sort_unstable();
        let mut store: HashMap<String, String> = HashMap::new();
        for (_, i) in points {
            let o = &mut ops[i];
            let cur = store.get(&o.key).cloned();
            let out = match &o.input {
                Input::Get => Output::Get(cur),
                Input::Put(v) => {
                    store.insert(o.key.clone(), v.clone());
                    Output::Put
                }
                Input::Cas { expected, new } => {
                    let ok = cur == *expected;
                    if ok {
                        store.insert(o.key.clone(), new.clone());
                    }
                    Output::Cas(ok)
                }
            };
            if o.ret != UNKNOWN_RETURN {
                o.output = out;
            }
        }
        ops
    }

    #[test]
    fn random_linearizable_single_key_large() {
        let h = random_history(42, 5, 3_000, &["k"], 2);
        let start = Instant::now();
        assert_eq!(check(&h, Duration::from_secs(60)), CheckResult::Ok);
        eprintln!("3000-op single-key history checked in {:?}", start.elapsed());
    }

    #[test]
    fn random_linearizable_multi_key() {
        for seed in 1..=20 {
            let h = random_history(seed, 4, 600, &["a", "b", "c"], 5);
            assert_eq!(check(&h, T), CheckResult::Ok, "seed {seed}");
        }
    }

    #[test]
    fn random_history_with_injected_bad_read_is_caught() {
        for seed in 1..=10 {
            let mut h = random_history(seed, 4, 400, &["a", "b"], 3);
            // Corrupt one completed read on key "b" to return a value nobody
            // wrote; that read must be the op blamed.
            let Some(i) = h
                .iter()
                .position(|o| o.key == "b" && matches!(o.output, Output::Get(_)) && o.call > 2_000)
            else {
                continue;
            };
            h[i].output = Output::Get(Some("bogus".into()));
            match check(&h, T) {
                CheckResult::Illegal { key, detail } => {
                    assert_eq!(key, "b", "seed {seed}");
                    let want = format!("Op whose response cannot be explained: #{i} ");
                    assert!(detail.contains(&want), "seed {seed}: {detail}");
                }
                other => panic!("seed {seed}: expected Illegal, got {other:?}"),
            }
        }
    }

    #[test]
    fn detail_is_readable() {
        let (_, detail) = assert_illegal(&[
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            get(2, "k", Some("a"), 40, 50),
        ]);
        eprintln!("{detail}");
        assert!(detail.contains("Put(\"b\")"), "{detail}");
        assert!(detail.contains("Value at that point: Some(\"b\")"), "{detail}");
    }
}
