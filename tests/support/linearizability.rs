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
//! never (they may simply be left unlinearised). Unknown `Get`s carry no
//! information and are dropped up front.
//!
//! Plain Wing & Gong is exponential in the number of concurrent ops, and
//! unknown ops stay "concurrent" forever. Fault-injection runs with a handful
//! of clients would then time out, so the search adds register-specific
//! reductions that never change the verdict: observed unknown writes become
//! known ones, values nobody reads are merged (`prepare`); real-time-order
//! refutations are checked before searching (`Searcher::impossible_read`);
//! reads are placed as soon as they can be, writes of identical effect are
//! not permuted, and a write that would hide a value some pending read still
//! needs is rejected at once (`search`). `tests::agrees_with_brute_force_*`
//! cross-checks all of this against a direct enumeration of orders.
//!
//! On failure the history is shrunk to the shortest failing prefix (binary
//! search over response times), and the report names the op whose response
//! makes it fail, the deepest linearisation found and why it got stuck.
//!
//! Values should be unique per write (e.g. `"{client}-{n}"`): the reductions
//! rely on knowing which write produced an observed value, and with repeated
//! values the search degrades to plain Wing & Gong.
//!
//! The file depends only on `std` so integration tests can include it with
//! `#[path = "support/linearizability.rs"] mod linearizability;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// What a client asked the store to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the key's current value.
    Get,
    /// Overwrite the key's value.
    Put(String),
    /// Transaction "if value == expected (None = key absent) then put new".
    Cas {
        expected: Option<String>,
        new: String,
    },
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

/// How many search steps run between two clock reads (a power of two); reading
/// the clock every step would dominate the cost of a step.
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
            let prefix_len = self.ops.iter().filter(|o| o.call <= t).count();
            let _ = writeln!(
                out,
                "The {}non-linearizable prefix ends at t={t}ns, with the response of:",
                if shrunk {
                    "shortest "
                } else {
                    "shortest found (shrinking hit its time budget) "
                },
            );
            for k in (0..ops.len()).filter(|&k| ops[k].ret == Some(t)) {
                let _ = writeln!(out, "  {}", describe(k));
            }
            let _ = writeln!(
                out,
                "It holds the {prefix_len} ops called by then; ops still running at t={t}ns count as pending (writes may or may not apply, reads are ignored)."
            );
        }

        let lin = &failure.linearization;
        if !lin.is_empty() {
            let _ = writeln!(
                out,
                "Deepest valid linearization of that prefix the search reached ({} ops{}), with the value after each op:",
                lin.len(),
                if lin.len() > REPORT_LIMIT {
                    format!(", last {REPORT_LIMIT} shown")
                } else {
                    String::new()
                }
            );
        }
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
        let value = self.state_name(state);
        let blocked = describe(failure.blocked);
        let _ = if lin.is_empty() {
            writeln!(
                out,
                "This op must be linearized before its response:\n  {blocked}"
            )
        } else {
            writeln!(
                out,
                "From there, this op must be linearized before its response:\n  {blocked}"
            )
        };
        if history
            .get(ops[failure.blocked].hist)
            .is_some_and(|o| o.output == Output::Unknown)
        {
            let _ = writeln!(
                out,
                "  (its outcome is unknown, but its value was observed, so it must have taken effect before the first observer returned)"
            );
        }
        let _ = match failure.reason {
            Blocked::Inconsistent => writeln!(out, "but its output is impossible when the value is {value}."),
            Blocked::Strands { reader } => writeln!(
                out,
                "but it would overwrite {value}, which this op still has to observe and which no remaining op writes again:\n  {}",
                describe(reader)
            ),
            Blocked::Explored => writeln!(
                out,
                "and every way of doing so from value {value} was already explored without success."
            ),
            Blocked::NeverWritten => writeln!(
                out,
                "but no op writing the value it observes had even been called by then."
            ),
            Blocked::Overwritten {
                writer,
                between,
                written_by,
            } => {
                let seen = observed(&ops[failure.blocked]).map_or_else(String::new, |v| self.state_name(v));
                let origin = match (writer, written_by) {
                    (Some(w), Some(by)) => {
                        // Say so when the bound is not simply its response.
                        let shown = history
                            .get(ops[w].hist)
                            .filter(|o| o.output != Output::Unknown)
                            .map(|o| o.ret);
                        let note = if shown == Some(by) && cut.is_none_or(|t| by <= t) {
                            String::new()
                        } else {
                            format!(
                                "  (its value was observed by t={by}ns, so it had taken effect by then)\n"
                            )
                        };
                        format!("{seen} is written only by\n  {}\n{note}", describe(w))
                    }
                    (Some(w), None) => format!("{seen} is written only by\n  {}\n", describe(w)),
                    (None, _) => format!("{seen} is the initial value and is never written back,\n"),
                };
                writeln!(
                    out,
                    "but {origin}and this op, which cannot leave {seen} in place, ran entirely after that and before it was called:\n  {}",
                    describe(between)
                )
            }
        };
        if failure.pending.is_empty() {
            let _ = writeln!(out, "No other op was pending at that point.");
        } else {
            let _ = writeln!(
                out,
                "Ops pending at that point, none of which leads to a valid linearization when placed next{}:",
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
    /// Why `blocked` could not be linearised right after `linearization`.
    reason: Blocked,
    /// Other ops that were called but not linearised at that point.
    pending: Vec<usize>,
}

#[derive(Debug)]
enum Blocked {
    /// Its recorded output is impossible in the state reached.
    Inconsistent,
    /// Applying it would overwrite a value that op `reader` (an index into
    /// the searched slice) still has to observe, and nothing left can write
    /// that value again.
    Strands { reader: usize },
    /// It was applicable, but that configuration had already been explored.
    Explored,
    /// It observes a value that no operation called before its response
    /// writes, so it can never be linearised.
    NeverWritten,
    /// It observes a value that only `writer` writes (`None`: the initial
    /// absent value, never written), but op `between` ran entirely after
    /// `writer` and before this op's call and cannot leave that value in
    /// place; nothing can restore it afterwards.
    Overwritten {
        writer: Option<usize>,
        between: usize,
        /// When `writer` had taken effect at the latest (its response, or
        /// the first response that observed its value if its own is unknown).
        written_by: Option<u64>,
    },
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

/// Memory cap for the cache, in 64-bit words (256 MiB). Past it the search
/// stops memoising new configurations: verdicts stay exact, the search just
/// loses pruning. This keeps a pathological history from exhausting memory
/// before the timeout fires.
const CACHE_WORD_LIMIT: usize = 32 << 20;

/// The set of linearised known ops, as a bitset over ops numbered in call
/// order. Because ops are linearised roughly in call order, such a set is "all
/// ops below some point, plus a few after it", so the cache stores just the
/// words in between (`window`) instead of the whole bitset, and identifies it
/// by an incrementally maintained Zobrist hash instead of rehashing it.
struct KnownSet {
    words: Vec<u64>,
    len: usize,
    /// Index of the first word that is not completely set.
    low: usize,
    /// One past the last word with any bit set.
    high: usize,
    /// XOR of `keys[i]` over the members.
    hash: u64,
    keys: Vec<u64>,
}

impl KnownSet {
    fn new(len: usize) -> Self {
        let mut seed = 0x5eed_1e55_0fca_1100_u64;
        KnownSet {
            words: vec![0; len.div_ceil(64)],
            len,
            low: 0,
            high: 0,
            hash: 0,
            keys: (0..len).map(|_| splitmix64(&mut seed)).collect(),
        }
    }

    /// The value of word `w` when all its bits that stand for ops are set.
    fn full(&self, w: usize) -> u64 {
        match self.len % 64 {
            r if r != 0 && w + 1 == self.words.len() => (1u64 << r) - 1,
            _ => u64::MAX,
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1u64 << (i % 64)) != 0
    }

    fn toggle(&mut self, i: usize) {
        let w = i / 64;
        self.words[w] ^= 1u64 << (i % 64);
        self.hash ^= self.keys[i];
        if self.words[w] == self.full(w) {
            while self.low < self.words.len() && self.words[self.low] == self.full(self.low) {
                self.low += 1;
            }
        } else {
            self.low = self.low.min(w);
        }
        if self.words[w] != 0 {
            self.high = self.high.max(w + 1);
        } else {
            while self.high > 0 && self.words[self.high - 1] == 0 {
                self.high -= 1;
            }
        }
    }

    /// The words that tell this set apart from others with the same `low`:
    /// all words before are full and all words after are empty.
    fn window(&self) -> &[u64] {
        &self.words[self.low..self.high.max(self.low)]
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Passes an already random `u64` key (a Zobrist hash) through unchanged.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
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
///
/// Entries live in one flat arena (no allocation per entry, so building and
/// dropping millions of them stays cheap), chained per hash of (known set,
/// state). Layout: `[next, state, low, window len, window.., unknown bits..]`.
struct Cache {
    heads: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    arena: Vec<u64>,
}

const ENTRY_HEADER: usize = 4;

impl Cache {
    fn new() -> Self {
        Cache {
            heads: HashMap::default(),
            arena: Vec::new(),
        }
    }

    /// Records the configuration and returns true if it is not subsumed by an
    /// already explored one.
    fn insert(&mut self, known: &KnownSet, state: State, unknown: &[u64]) -> bool {
        let mut salt = u64::from(state);
        let key = known.hash ^ splitmix64(&mut salt);
        let window = known.window();
        let mut e = self.heads.get(&key).copied().unwrap_or(NIL);
        while e != NIL {
            let (header, rest) = self.arena[e..].split_at(ENTRY_HEADER);
            let len = header[3] as usize;
            if header[1] == u64::from(state)
                && header[2] == known.low as u64
                && len == window.len()
                && rest[..len] == *window
                && is_subset(&rest[len..len + unknown.len()], unknown)
            {
                return false;
            }
            e = usize::try_from(header[0]).unwrap_or(NIL);
        }
        let size = ENTRY_HEADER + window.len() + unknown.len();
        if self.arena.len() + size > CACHE_WORD_LIMIT {
            return true;
        }
        let next = self.heads.insert(key, self.arena.len()).unwrap_or(NIL);
        self.arena.extend_from_slice(&[
            next as u64,
            u64::from(state),
            known.low as u64,
            window.len() as u64,
        ]);
        self.arena.extend_from_slice(window);
        self.arena.extend_from_slice(unknown);
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
/// Walking the event list from the head, each call event before the first
/// remaining return event is a candidate to linearise next. A candidate that
/// the model accepts and whose resulting configuration is new gets linearised
/// (pushed, lifted out of the list) and the walk restarts from the head.
/// Reaching a return event means that op should already have been
/// linearised, so the last choice is undone and the walk resumes after it.
/// The history is linearisable once every op with a known response has been
/// linearised; unknown ops may stay behind (they "never happened").
///
/// Departures from Porcupine, none of which changes the verdict (they only
/// prune configurations with no completion, or reorder/skip candidates in
/// ways a shortest completion can always be rearranged to follow):
/// * Candidates are tried in two passes: known ops first, unknown-outcome ops
///   only once the known ones are exhausted, so configurations that use fewer
///   unknown ops are explored (and cached) first and subsume the rest (see
///   `Cache`).
/// * An unknown op that would not change the state is never applied: leaving
///   it unused is at least as good.
/// * Unknown ops with identical effects are interchangeable, so only the
///   earliest-called unused one of each such group is a candidate; likewise
///   for known ops, the one with the earliest response among those that may
///   go next (see `Searcher::earliest_available_twin`).
/// * A step that moves the register away from a value `w` is rejected when
///   some known op still to be linearised needs to see `w` and nothing left
///   can write `w` again (see `Searcher::strands_a_reader`). Without this,
///   with many concurrent clients the search eagerly applies a write ahead of
///   a slow read of the previous value and only notices at that read's
///   response, after exploring every interleaving in between.
/// * A read-only op (a read, or a CAS that reported failure) that holds in
///   the current state is placed immediately and alone: it can be moved to
///   the front of any valid completion (see `Searcher::forced_move`). If that
///   fails, so does the configuration.
/// * Before searching, reads that real-time order alone refutes are reported
///   directly (see `Searcher::impossible_read`).
fn search(ops: &[KeyOp], deadline: Option<Instant>) -> Outcome {
    let mut s = Searcher::new(prepare(ops));
    // Cheap necessary condition first: an exhaustive search would only
    // discover this at the op's response, after exploring everything before.
    if let Some((reader, reason)) = s.impossible_read() {
        return Outcome::Violation(Failure {
            linearization: Vec::new(),
            blocked: reader,
            reason,
            pending: Vec::new(),
        });
    }
    let mut pos = Pos::Restart;
    let mut best: Option<Failure> = None;
    let mut steps: u64 = 0;

    loop {
        if s.remaining_known == 0 {
            return Outcome::Linearizable;
        }
        if steps & (DEADLINE_CHECK_INTERVAL - 1) == 0 {
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    return Outcome::TimedOut;
                }
            }
        }
        steps += 1;

        pos = match pos {
            // A new configuration: take a forced move if there is one,
            // otherwise try the candidates one by one.
            Pos::Restart => match s.forced_move() {
                Some(call) if s.try_linearize(call, true) => Pos::Restart,
                // The forced move leads only to explored ground, and it
                // stands for every alternative: nothing new here.
                Some(_) => Pos::Backtrack,
                None => Pos::Walk(false, s.list.first()),
            },
            // Every known op's return node stays in the list until that op is
            // linearised, and the walk never steps past a return node, so NIL
            // means `remaining_known == 0`, which was handled above.
            Pos::Walk(_, NIL) => return Outcome::Linearizable,
            Pos::Walk(unknown_pass, entry) => {
                let node = s.list.nodes[entry];
                if node.is_call {
                    let is_unknown = s.ops[node.op].ret.is_none();
                    if is_unknown == unknown_pass && s.try_linearize(entry, false) {
                        Pos::Restart
                    } else {
                        Pos::Walk(unknown_pass, node.next)
                    }
                } else if !unknown_pass {
                    // Known candidates exhausted; give the unknown ones a turn.
                    Pos::Walk(true, s.list.first())
                } else {
                    // Dead end. Remember the deepest one: it is the most
                    // informative explanation if the whole search fails.
                    if best
                        .as_ref()
                        .is_none_or(|b| s.stack.len() > b.linearization.len())
                    {
                        best = Some(s.failure_at(entry));
                    }
                    Pos::Backtrack
                }
            }
            Pos::Backtrack => match s.undo() {
                // Nothing left to undo: no order explains the history.
                None => {
                    return Outcome::Violation(match best {
                        Some(f) => f,
                        None => s.failure_at(s.find_first_return_node()),
                    })
                }
                // A forced move was the only option in its configuration.
                Some((_, true)) => Pos::Backtrack,
                // Resume with the candidate after the undone one, in its pass.
                Some((call, false)) => {
                    let i = s.list.nodes[call].op;
                    Pos::Walk(s.ops[i].ret.is_none(), s.list.nodes[call].next)
                }
            },
        };
    }
}

/// Where the search loop is.
#[derive(Clone, Copy)]
enum Pos {
    /// Just reached a new configuration.
    Restart,
    /// Walking the candidates: (trying unknown ops?, current list node).
    Walk(bool, usize),
    /// The current configuration is exhausted; undo the last step.
    Backtrack,
}

/// Mutable search state for one key.
struct Searcher {
    ops: Vec<KeyOp>,
    list: EventList,
    /// Bit index of each op within `known` (numbered in call order) or
    /// `unknown_bits`.
    slot: Vec<usize>,
    /// Groups of interchangeable unknown ops, each in call order. The earliest
    /// unused member is always the one taken, so the used members of a group
    /// are a prefix and `group_used` is its length.
    group_of: Vec<usize>,
    groups: Vec<Vec<usize>>,
    group_used: Vec<usize>,
    /// Groups of known ops with identical effects (NIL: no twin), each sorted
    /// by response time; `twin_pos` is an op's index in its group and
    /// `twin_first` the first member of each group not yet linearised.
    twin_group_of: Vec<usize>,
    twin_groups: Vec<Vec<usize>>,
    twin_pos: Vec<usize>,
    twin_first: Vec<usize>,
    /// Time of the first return event still in the list (u64::MAX if none):
    /// ops called up to then are the ones that may be linearised next.
    first_return: u64,
    known: KnownSet,
    unknown_bits: Vec<u64>,
    cache: Cache,
    /// (call node, state before it, was it a forced move) for every
    /// linearised op, in order.
    stack: Vec<(usize, State, bool)>,
    state: State,
    remaining_known: usize,
    /// Per state: unlinearised known ops that must see it (reads of it,
    /// successful CASes expecting it) ...
    readers_left: Vec<u32>,
    /// ... and unlinearised ops that may still write it.
    writers_left: Vec<u32>,
}

impl Searcher {
    fn new(ops: Vec<KeyOp>) -> Self {
        let n = ops.len();
        let list = EventList::new(&ops);

        let mut slot = vec![0usize; n];
        let mut by_call: Vec<usize> = (0..n).collect();
        by_call.sort_by_key(|&i| (ops[i].call, i));
        let (mut n_known, mut n_unknown) = (0, 0);
        for &i in &by_call {
            if ops[i].ret.is_some() {
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

        let mut twin_group_of = vec![NIL; n];
        let mut twin_groups: Vec<Vec<usize>> = Vec::new();
        let mut twin_pos = vec![0usize; n];
        let mut known_by_effect: HashMap<Effect, Vec<usize>> = HashMap::new();
        for (i, o) in ops.iter().enumerate() {
            if o.ret.is_some() {
                known_by_effect.entry(o.effect).or_default().push(i);
            }
        }
        let mut twin_sets: Vec<Vec<usize>> = known_by_effect
            .into_values()
            .filter(|m| m.len() > 1)
            .collect();
        // HashMap order is arbitrary; keep the search deterministic.
        twin_sets.sort_unstable();
        for mut members in twin_sets {
            members.sort_by_key(|&i| (ops[i].ret, i));
            for (pos, &i) in members.iter().enumerate() {
                twin_group_of[i] = twin_groups.len();
                twin_pos[i] = pos;
            }
            twin_groups.push(members);
        }

        // JUNK is excluded: nothing reads it, so it needs no bookkeeping.
        let states = ops
            .iter()
            .flat_map(|o| match o.effect {
                Effect::Read(v) | Effect::Write(v) => [v, ABSENT],
                Effect::Cas { expected, new, .. } => [expected, new],
            })
            .filter(|&v| v != JUNK)
            .max()
            .map_or(1, |m| m as usize + 1);
        let mut readers_left = vec![0u32; states];
        let mut writers_left = vec![0u32; states];
        for o in &ops {
            if let Some(v) = reads(o) {
                readers_left[v as usize] += 1;
            }
            if let Some(v) = writes(o) {
                writers_left[v as usize] += 1;
            }
        }

        let mut s = Searcher {
            group_used: vec![0; groups.len()],
            twin_first: vec![0; twin_groups.len()],
            twin_group_of,
            twin_groups,
            twin_pos,
            first_return: u64::MAX,
            ops,
            list,
            slot,
            group_of,
            groups,
            known: KnownSet::new(n_known),
            unknown_bits: vec![0; n_unknown.div_ceil(64)],
            cache: Cache::new(),
            stack: Vec::new(),
            state: ABSENT,
            remaining_known: n_known,
            readers_left,
            writers_left,
        };
        s.first_return = s.find_first_return();
        s
    }

    /// A read-only known op (a read, or a CAS that reported failure) that may
    /// go next and holds in the current state, if any. Placing it first is
    /// never wrong: in any valid completion it can be moved to the front
    /// without changing a single state or violating a deadline. So it is the
    /// only move worth trying from here, which prunes all interleavings of
    /// reads with each other and with the writes around them.
    fn forced_move(&self) -> Option<usize> {
        let mut i = self.list.first();
        while i != NIL {
            let node = self.list.nodes[i];
            if !node.is_call {
                return None;
            }
            let op = &self.ops[node.op];
            if op.ret.is_some()
                && read_only(op.effect)
                && op.effect.apply(self.state).is_some()
                && self.earliest_available_twin(node.op)
            {
                return Some(i);
            }
            i = node.next;
        }
        None
    }

    fn find_first_return_node(&self) -> usize {
        let mut i = self.list.first();
        while i != NIL && self.list.nodes[i].is_call {
            i = self.list.nodes[i].next;
        }
        i
    }

    fn find_first_return(&self) -> u64 {
        let mut i = self.list.first();
        while i != NIL {
            let node = self.list.nodes[i];
            if !node.is_call {
                return self.ops[node.op].ret.unwrap_or(u64::MAX);
            }
            i = node.next;
        }
        u64::MAX
    }

    /// Known ops with identical effects are interchangeable except for their
    /// deadlines, so among those that may be linearised now only the one with
    /// the earliest response is tried: in any valid completion that uses a
    /// later-deadline twin first, swapping the two keeps every state and
    /// deadline satisfied. Without this, every subset of concurrent writes of
    /// never-read values (all `JUNK`) is a distinct configuration.
    fn earliest_available_twin(&self, i: usize) -> bool {
        let g = self.twin_group_of[i];
        if g == NIL {
            return true;
        }
        let members = &self.twin_groups[g];
        !members[self.twin_first[g]..self.twin_pos[i]]
            .iter()
            .any(|&y| !self.is_linearized(y) && self.ops[y].call <= self.first_return)
    }

    /// Whether moving from the current state to `next` by linearising op `i`
    /// leaves an unlinearised op that needs the current value with no way to
    /// ever see it again. Such a configuration has no completion.
    fn strands_a_reader(&self, i: usize, next: State) -> bool {
        let leaving = self.state;
        if next == leaving || leaving == JUNK {
            return false;
        }
        let Some(&readers) = self.readers_left.get(leaving as usize) else {
            return false;
        };
        // Op `i` itself may be one of the readers (a CAS consuming the value).
        let readers = readers - u32::from(reads(&self.ops[i]) == Some(leaving));
        let writers = self
            .writers_left
            .get(leaving as usize)
            .copied()
            .unwrap_or(0);
        readers > 0 && writers == 0
    }

    /// Linearises the op whose call node is `call` if it is a candidate in
    /// its pass, the model accepts it, and the resulting configuration is
    /// neither hopeless nor subsumed by an explored one.
    fn try_linearize(&mut self, call: usize, forced: bool) -> bool {
        let i = self.list.nodes[call].op;
        let op = self.ops[i];
        let Some(next) = op.effect.apply(self.state) else {
            return false;
        };
        let unknown = op.ret.is_none();
        if unknown {
            let g = self.group_of[i];
            let first_unused = self.groups[g].get(self.group_used[g]) == Some(&i);
            if !first_unused || next == self.state {
                return false;
            }
        }
        if !unknown && !self.earliest_available_twin(i) {
            return false;
        }
        if self.strands_a_reader(i, next) {
            return false;
        }
        self.toggle(i);
        if !self.cache.insert(&self.known, next, &self.unknown_bits) {
            self.toggle(i);
            return false;
        }
        self.stack.push((call, self.state, forced));
        self.state = next;
        self.list.lift(call);
        self.count(i, false);
        if !unknown {
            self.first_return = self.find_first_return();
            let g = self.twin_group_of[i];
            if g != NIL {
                let members = &self.twin_groups[g];
                let mut first = self.twin_first[g];
                while first < members.len() && self.is_linearized(members[first]) {
                    first += 1;
                }
                self.twin_first[g] = first;
            }
        }
        true
    }

    /// Undoes the most recent linearisation; returns its call node and
    /// whether it was a forced move.
    fn undo(&mut self) -> Option<(usize, bool)> {
        let (call, prev_state, forced) = self.stack.pop()?;
        let i = self.list.nodes[call].op;
        self.state = prev_state;
        self.list.unlift(call);
        self.toggle(i);
        self.count(i, true);
        if self.ops[i].ret.is_some() {
            self.first_return = self.find_first_return();
            let g = self.twin_group_of[i];
            if g != NIL {
                self.twin_first[g] = self.twin_first[g].min(self.twin_pos[i]);
            }
        }
        Some((call, forced))
    }

    /// Flips op `i`'s membership in the linearised set.
    fn toggle(&mut self, i: usize) {
        if self.ops[i].ret.is_some() {
            self.known.toggle(self.slot[i]);
        } else {
            toggle(&mut self.unknown_bits, self.slot[i]);
        }
    }

    fn is_linearized(&self, i: usize) -> bool {
        if self.ops[i].ret.is_some() {
            self.known.contains(self.slot[i])
        } else {
            self.unknown_bits[self.slot[i] / 64] & (1u64 << (self.slot[i] % 64)) != 0
        }
    }

    /// Static checks that refute a read (or successful CAS) by real-time
    /// order alone. They are necessary conditions the search would also
    /// establish, but only after exhausting every interleaving up to the
    /// read, which with many concurrent clients can take forever:
    /// * no op writing the observed value was called before the read returned;
    /// * the value has a single writer `W` (or is the initial absent value,
    ///   which is never written), and some completed op `X` that cannot leave
    ///   the value in place ran entirely after `W` and before the read was
    ///   called. `W` precedes `X` precedes the read in every linearisation,
    ///   and once `X` has moved the register off the value nothing restores it.
    fn impossible_read(&self) -> Option<(usize, Blocked)> {
        let mut first_write_call: HashMap<State, u64> = HashMap::new();
        let mut writers: HashMap<State, Vec<usize>> = HashMap::new();
        for (i, o) in self.ops.iter().enumerate() {
            if let Some(v) = writes(o) {
                let t = first_write_call.entry(v).or_insert(o.call);
                *t = (*t).min(o.call);
                writers.entry(v).or_default().push(i);
            }
        }
        // Completed ops by call time, for the "X ran in between" scan.
        let mut by_call: Vec<usize> = (0..self.ops.len())
            .filter(|&i| self.ops[i].ret.is_some())
            .collect();
        by_call.sort_by_key(|&i| self.ops[i].call);

        for (r, op) in self.ops.iter().enumerate() {
            let (Some(v), Some(ret)) = (reads(op), op.ret) else {
                continue;
            };
            if v != ABSENT && first_write_call.get(&v).is_none_or(|&call| call > ret) {
                return Some((r, Blocked::NeverWritten));
            }
            // The only way the value can come about, and when it finished.
            let writer = match (v, writers.get(&v).map(Vec::as_slice)) {
                (ABSENT, None) => None,
                (ABSENT, Some(_)) => continue,
                (_, Some(&[w])) => Some(w),
                _ => continue,
            };
            let after = match writer.map(|w| self.ops[w].ret) {
                None => None,
                Some(Some(t)) => Some(t),
                // An unknown-outcome writer bounds nothing in real time.
                Some(None) => continue,
            };
            let start = after.map_or(0, |t| by_call.partition_point(|&i| self.ops[i].call <= t));
            for &x in &by_call[start..] {
                let xo = &self.ops[x];
                if xo.call >= op.call {
                    break;
                }
                let before_read = xo.ret.is_some_and(|xr| xr < op.call);
                if x != r && before_read && xo.effect.apply(v) != Some(v) {
                    return Some((
                        r,
                        Blocked::Overwritten {
                            writer,
                            between: x,
                            written_by: after,
                        },
                    ));
                }
            }
        }
        None
    }

    /// Snapshot of a dead end (`ret_entry` is the return node that could not
    /// be passed), for the failure report.
    fn failure_at(&self, ret_entry: usize) -> Failure {
        let blocked = match self.list.nodes.get(ret_entry) {
            Some(node) => node.op,
            // Not expected (a violation is always reached through a dead end
            // at a return node), but blame some unlinearised op, not panic.
            None => (0..self.ops.len())
                .find(|&k| self.ops[k].ret.is_some() && !self.is_linearized(k))
                .unwrap_or(0),
        };
        let mut pending = Vec::new();
        let mut i = self.list.first();
        while i != NIL && i != ret_entry {
            let n = self.list.nodes[i];
            if n.is_call && n.op != blocked {
                pending.push(n.op);
            }
            i = n.next;
        }
        let reason = match self.ops[blocked].effect.apply(self.state) {
            None => Blocked::Inconsistent,
            Some(next) if self.strands_a_reader(blocked, next) => {
                // Any unlinearised known op that needs the current value.
                let reader = (0..self.ops.len()).find(|&k| {
                    k != blocked
                        && !self.is_linearized(k)
                        && reads(&self.ops[k]) == Some(self.state)
                });
                match reader {
                    Some(reader) => Blocked::Strands { reader },
                    None => Blocked::Explored,
                }
            }
            Some(_) => Blocked::Explored,
        };
        Failure {
            linearization: self
                .stack
                .iter()
                .map(|&(call, ..)| self.list.nodes[call].op)
                .collect(),
            blocked,
            reason,
            pending,
        }
    }

    /// Updates the "left" counters when op `i` is linearised (`back` false)
    /// or un-linearised (`back` true).
    fn count(&mut self, i: usize, back: bool) {
        let op = self.ops[i];
        let adjust = |c: &mut u32| {
            if back {
                *c += 1
            } else {
                *c -= 1
            }
        };
        if let Some(v) = reads(&op) {
            adjust(&mut self.readers_left[v as usize]);
        }
        if let Some(v) = writes(&op) {
            adjust(&mut self.writers_left[v as usize]);
        }
        if op.ret.is_none() {
            let used = &mut self.group_used[self.group_of[i]];
            if back {
                *used -= 1
            } else {
                *used += 1
            }
        } else if back {
            self.remaining_known += 1;
        } else {
            self.remaining_known -= 1;
        }
    }
}

/// Whether an op never changes the state when it can be applied.
fn read_only(effect: Effect) -> bool {
    match effect {
        Effect::Read(_) => true,
        Effect::Write(_) => false,
        Effect::Cas {
            expected,
            new,
            outcome,
        } => outcome == Some(false) || (outcome == Some(true) && expected == new),
    }
}

/// The value an op's output shows it observed (for reporting).
fn observed(op: &KeyOp) -> Option<State> {
    match op.effect {
        Effect::Read(v) => Some(v),
        Effect::Cas { expected, .. } => Some(expected),
        Effect::Write(_) => None,
    }
}

/// The value a known op must observe when it is linearised, if any.
fn reads(op: &KeyOp) -> Option<State> {
    match op.effect {
        Effect::Read(v) => Some(v),
        Effect::Cas {
            expected,
            outcome: Some(true),
            ..
        } => Some(expected),
        _ => None,
    }
    .filter(|&v| v != JUNK && op.ret.is_some())
}

/// The value an op may write, if any (a CAS known to have failed writes
/// nothing).
fn writes(op: &KeyOp) -> Option<State> {
    match op.effect {
        Effect::Write(v) => Some(v),
        Effect::Cas {
            new,
            outcome: None | Some(true),
            ..
        } => Some(new),
        _ => None,
    }
    .filter(|&v| v != JUNK)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the operations one by one in the order of their linearization
    /// points against a plain map, and records the outputs of those that
    /// completed: a history that is linearizable by construction.
    fn run_at_points<T: Ord>(ops: &mut [Operation], mut points: Vec<(T, usize)>) {
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
    }

    const T: Duration = Duration::from_secs(30);

    fn op(
        client: usize,
        key: &str,
        input: Input,
        output: Output,
        call: u64,
        ret: u64,
    ) -> Operation {
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
        op(
            c,
            k,
            Input::Put(v.into()),
            Output::Unknown,
            call,
            UNKNOWN_RETURN,
        )
    }
    fn get(c: usize, k: &str, v: Option<&str>, call: u64, ret: u64) -> Operation {
        op(
            c,
            k,
            Input::Get,
            Output::Get(v.map(str::to_string)),
            call,
            ret,
        )
    }
    fn cas(
        c: usize,
        k: &str,
        exp: Option<&str>,
        new: &str,
        ok: bool,
        call: u64,
        ret: u64,
    ) -> Operation {
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
        let (key, detail) =
            assert_illegal(&[put(0, "k", "a", 0, 10), get(1, "k", Some("ghost"), 5, 15)]);
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
        assert!(
            detail.contains("prefix ends at t=50ns, with the response of:\n  #2 "),
            "{detail}"
        );
        assert!(detail.contains("It holds the 3 ops"), "{detail}");
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
    fn random_history(
        seed: u64,
        clients: usize,
        total_ops: usize,
        keys: &[&str],
        unknown_pct: u64,
    ) -> Vec<Operation> {
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
                recent
                    .entry(key.to_string())
                    .or_insert_with(|| vec![None])
                    .push(Some(v.clone()));
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
        run_at_points(&mut ops, points);
        ops
    }

    #[test]
    fn random_linearizable_single_key_large() {
        let h = random_history(42, 5, 3_000, &["k"], 2);
        let start = Instant::now();
        assert_eq!(check(&h, Duration::from_secs(60)), CheckResult::Ok);
        eprintln!(
            "3000-op single-key history checked in {:?}",
            start.elapsed()
        );
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
                    let want = format!("with the response of:\n  #{i} ");
                    assert!(detail.contains(&want), "seed {seed}: {detail}");
                }
                other => panic!("seed {seed}: expected Illegal, got {other:?}"),
            }
        }
    }

    /// Reference checker straight from the definition: try every order of
    /// the ops (unknown ones optional) that respects real time. Exponential,
    /// so only for tiny histories; it shares no code with the real checker.
    fn brute_force(history: &[Operation]) -> bool {
        let mut keys: Vec<&str> = history.iter().map(|o| o.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.iter().all(|k| {
            let ops: Vec<&Operation> = history
                .iter()
                .filter(|o| o.key == *k && !(o.input == Input::Get && o.output == Output::Unknown))
                .collect();
            brute_force_key(&ops, &mut vec![false; ops.len()], &None)
        })
    }

    fn brute_force_key(ops: &[&Operation], used: &mut [bool], state: &Option<String>) -> bool {
        let known = |o: &Operation| o.output != Output::Unknown;
        if ops.iter().zip(used.iter()).all(|(o, &u)| u || !known(o)) {
            return true;
        }
        for i in 0..ops.len() {
            // Op i may come next unless an unplaced op returned before its call.
            let preceded = ops
                .iter()
                .zip(used.iter())
                .any(|(p, &u)| !u && known(p) && p.ret < ops[i].call);
            if used[i] || preceded {
                continue;
            }
            let next = match (&ops[i].input, &ops[i].output) {
                (Input::Get, Output::Get(v)) => (v == state).then(|| state.clone()),
                (Input::Put(v), _) => Some(Some(v.clone())),
                (Input::Cas { expected, new }, Output::Cas(true)) => {
                    (expected == state).then(|| Some(new.clone()))
                }
                (Input::Cas { expected, .. }, Output::Cas(false)) => {
                    (expected != state).then(|| state.clone())
                }
                (Input::Cas { expected, new }, _) => Some(if expected == state {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                _ => None,
            };
            if let Some(next) = next {
                used[i] = true;
                let ok = brute_force_key(ops, used, &next);
                used[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }

    /// A tiny random history: simulated against an atomic register (so often
    /// linearisable), then with probability 1/2 one output is scrambled.
    /// Values come from a small pool so that repeated writes of the same value
    /// (which defeat some of the checker's shortcuts) are common.
    fn tiny_history(rng: &mut Rng, max_ops: u64, unknown_one_in: u64) -> Vec<Operation> {
        let pool = ["a", "b", "c"];
        let keys = if rng.below(4) == 0 {
            &["x", "y"][..]
        } else {
            &["x"][..]
        };
        let n = 1 + rng.below(max_ops) as usize;
        let value = |rng: &mut Rng, i: usize| -> String {
            if rng.below(2) == 0 {
                pool[rng.below(3) as usize].to_string()
            } else {
                format!("u{i}")
            }
        };
        let mut ops = Vec::new();
        let mut points = Vec::new();
        for i in 0..n {
            let call = rng.below(30);
            let dur = rng.below(15);
            let input = match rng.below(3) {
                0 => Input::Get,
                1 => Input::Put(value(rng, i)),
                _ => Input::Cas {
                    expected: (rng.below(4) != 0).then(|| pool[rng.below(3) as usize].to_string()),
                    new: value(rng, i),
                },
            };
            let unknown = rng.below(unknown_one_in) == 0;
            let point = if unknown {
                (rng.below(2) == 0).then(|| call + rng.below(40))
            } else {
                Some(call + rng.below(dur + 1))
            };
            if let Some(p) = point {
                points.push((p, i));
            }
            let ret = if unknown { UNKNOWN_RETURN } else { call + dur };
            let key = keys[rng.below(keys.len() as u64) as usize];
            ops.push(op(i % 3, key, input, Output::Unknown, call, ret));
        }
        run_at_points(&mut ops, points);
        if rng.below(2) == 0 {
            let i = rng.below(n as u64) as usize;
            let scrambled = match ops[i].output {
                Output::Get(_) => Output::Get((rng.below(4) != 0).then(|| value(rng, i))),
                Output::Cas(ok) => Output::Cas(!ok),
                _ => ops[i].output.clone(),
            };
            ops[i].output = scrambled;
        }
        ops
    }

    /// Compares verdicts on `cases` random tiny histories; returns how many
    /// were (linearisable, not linearisable).
    fn compare_with_brute_force(
        seed: u64,
        cases: u32,
        max_ops: u64,
        unknown_one_in: u64,
    ) -> (u32, u32) {
        let mut rng = Rng(seed);
        let (mut ok, mut illegal) = (0, 0);
        for case in 0..cases {
            let h = tiny_history(&mut rng, max_ops, unknown_one_in);
            let expected = brute_force(&h);
            let got = check(&h, T);
            match (&got, expected) {
                (CheckResult::Ok, true) => ok += 1,
                (CheckResult::Illegal { .. }, false) => illegal += 1,
                _ => panic!(
                    "seed {seed} case {case}: checker says {got:?}, brute force says {expected} for {h:#?}"
                ),
            }
        }
        (ok, illegal)
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_histories() {
        let (ok, illegal) = compare_with_brute_force(0x5eed, 20_000, 7, 5);
        // Both verdicts must be well exercised for the comparison to mean much.
        assert!(ok > 4_000 && illegal > 4_000, "ok={ok} illegal={illegal}");
    }

    #[test]
    fn agrees_with_brute_force_with_many_unknown_ops() {
        let (ok, illegal) = compare_with_brute_force(0xfa17, 10_000, 9, 2);
        assert!(ok > 2_000 && illegal > 800, "ok={ok} illegal={illegal}");
    }

    #[test]
    fn detail_is_readable() {
        let (_, detail) = assert_illegal(&[
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            get(2, "k", Some("a"), 40, 50),
        ]);
        eprintln!("{detail}");
        // The real-time sandwich Put(a) < Put(b) < Get -> a is spelled out.
        assert!(
            detail.contains("Some(\"a\") is written only by\n  #0 client 0: Put(\"a\")"),
            "{detail}"
        );
        assert!(
            detail.contains(
                "ran entirely after that and before it was called:\n  #1 client 1: Put(\"b\")"
            ),
            "{detail}"
        );

        // A pending write bounded by an observation of its value.
        let (_, detail) = assert_illegal(&[
            put(0, "k", "a", 0, 100),
            put(1, "k", "b", 0, 100),
            get(2, "k", Some("a"), 10, 20),
            get(2, "k", Some("b"), 30, 40),
            get(2, "k", Some("a"), 50, 60),
        ]);
        eprintln!("{detail}");
        assert!(detail.contains("with the response of:\n  #4 "), "{detail}");
        assert!(
            detail.contains("(its value was observed by t=20ns, so it had taken effect by then)"),
            "{detail}"
        );

        // Overlapping ops can only be refuted by the search; the report then
        // shows how far it got.
        let (_, detail) = assert_illegal(&[
            put(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", true, 20, 40),
            cas(2, "k", Some("a"), "c", true, 30, 50),
        ]);
        eprintln!("{detail}");
        assert!(detail.contains("Deepest valid linearization"), "{detail}");
        assert!(detail.contains("with the response of:\n  #2 "), "{detail}");
    }
}
