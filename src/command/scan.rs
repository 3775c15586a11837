//! Key iteration: SCAN and KEYS, Redis's glob patterns, and the cursor
//! table that maps SCAN's integer cursors to the engine's resume key.
//!
//! The engines scan in key order and resume strictly after a key, so a
//! full SCAN returns every key that exists throughout it exactly once
//! (Redis promises at least once). Clients parse the cursor as an integer,
//! so the last key of each page is kept in a bounded server-wide table
//! under a fresh number; a cursor evicted from the table answers an error
//! telling the client to start again.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{
    EngineCommand, Executed, Op as AnyOp, ServerContext, Session, Step, engine_error, integer,
    over_budget, syntax_error,
};
use crate::KvsEngine;
use crate::engine::now_ms;
use crate::protocol::resp::{Reply, array_header_len, bulk_len};

/// Cursors kept at most.
const MAX_CURSORS: usize = 16 << 10;
/// Key bytes the cursor table holds at most.
const MAX_CURSOR_BYTES: usize = 32 << 20;
/// Keys asked of the engine at a time, so a large COUNT or a KEYS never
/// holds more than one page beyond the reply being built.
const PAGE: usize = 512;
/// `SCAN`'s default COUNT, as Redis's.
const DEFAULT_COUNT: usize = 10;

/// Resume points of SCANs in progress, oldest first.
pub(super) struct CursorTable {
    next: u64,
    entries: VecDeque<(u64, String)>,
    bytes: usize,
}

impl Default for CursorTable {
    /// Numbers start at the current time in milliseconds, so a cursor kept
    /// by a client across a server restart is unlikely to name a new one.
    fn default() -> CursorTable {
        CursorTable {
            next: now_ms().max(1),
            entries: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl CursorTable {
    /// Keeps `key` and returns its cursor (never 0), evicting the oldest
    /// cursors beyond the bounds.
    fn insert(&mut self, key: String) -> u64 {
        self.next = self.next.wrapping_add(1).max(1);
        let id = self.next;
        self.bytes += key.len();
        self.entries.push_back((id, key));
        while self.entries.len() > MAX_CURSORS
            || (self.bytes > MAX_CURSOR_BYTES && self.entries.len() > 1)
        {
            if let Some((_, old)) = self.entries.pop_front() {
                self.bytes -= old.len();
            }
        }
        id
    }

    /// The resume key of `cursor`, if still kept.
    fn get(&self, cursor: u64) -> Option<String> {
        // Ids grow along the queue except across a wrap, so search all.
        self.entries
            .iter()
            .rev()
            .find(|(id, _)| *id == cursor)
            .map(|(_, key)| key.clone())
    }
}

#[derive(Debug)]
pub(super) enum Op {
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        /// `TYPE` named something other than `string`: nothing matches.
        no_type_match: bool,
    },
    Keys(Bytes),
}

fn engine(op: Op) -> Step {
    Step::Engine(EngineCommand(AnyOp::Scan(op)))
}

/// Longest MATCH / KEYS pattern accepted. Matching costs up to pattern ×
/// key length per key (one backtracking star), so an unbounded pattern
/// would let one request hold a pool thread for minutes. Redis has no
/// such limit; patterns in real use are a few dozen bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

fn pattern_too_long() -> Step {
    Step::Reply(Reply::error(format!(
        "ERR pattern too long (the maximum is {MAX_PATTERN_LEN} bytes)"
    )))
}

/// A SCAN cursor: a decimal unsigned 64-bit integer.
fn cursor(arg: &[u8]) -> Option<u64> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

pub(super) fn scan(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    let Some(cursor) = cursor(args[1]) else {
        return Step::Reply(Reply::error("ERR invalid cursor"));
    };
    let mut pattern = None;
    let mut count = DEFAULT_COUNT;
    let mut no_type_match = false;
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return Step::Reply(syntax_error());
        };
        match &args[i].to_ascii_uppercase()[..] {
            b"COUNT" => match integer(value) {
                Ok(n) if n < 1 => return Step::Reply(syntax_error()),
                Ok(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
                Err(reply) => return Step::Reply(reply),
            },
            b"MATCH" if value.len() > MAX_PATTERN_LEN => return pattern_too_long(),
            b"MATCH" => pattern = Some(Bytes::copy_from_slice(value)),
            b"TYPE" => no_type_match = !value.eq_ignore_ascii_case(b"string"),
            _ => return Step::Reply(syntax_error()),
        }
        i += 2;
    }
    if pattern.as_deref() == Some(b"*") {
        pattern = None;
    }
    engine(Op::Scan {
        cursor,
        pattern,
        count,
        no_type_match,
    })
}

pub(super) fn keys(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    if args[1].len() > MAX_PATTERN_LEN {
        return pattern_too_long();
    }
    engine(Op::Keys(Bytes::copy_from_slice(args[1])))
}

/// A reply being built under a byte budget.
struct Bounded {
    items: Vec<Reply>,
    size: usize,
    budget: usize,
}

impl Bounded {
    fn new(budget: usize) -> Bounded {
        Bounded {
            items: Vec::new(),
            // The array header is counted once the length is known; leave
            // room for the longest one.
            size: array_header_len(usize::MAX),
            budget,
        }
    }

    /// Adds `key`; false when that would pass the budget.
    fn push(&mut self, key: String) -> bool {
        self.size += bulk_len(key.len());
        if self.size > self.budget {
            return false;
        }
        self.items.push(Reply::bulk(key));
        true
    }
}

impl Op {
    pub(super) fn execute<E: KvsEngine>(
        self,
        engine: &E,
        ctx: &ServerContext,
        budget: usize,
    ) -> Executed {
        match self {
            Op::Scan {
                cursor,
                pattern,
                count,
                no_type_match,
            } => scan_page(engine, ctx, budget, cursor, pattern, count, no_type_match),
            Op::Keys(pattern) => all_keys(engine, budget, &pattern),
        }
        .into()
    }
}

fn scan_page<E: KvsEngine>(
    engine: &E,
    ctx: &ServerContext,
    budget: usize,
    cursor: u64,
    pattern: Option<Bytes>,
    count: usize,
    no_type_match: bool,
) -> Reply {
    let mut after = None;
    if cursor != 0 {
        let kept = ctx.cursors.lock().ok().and_then(|t| t.get(cursor));
        match kept {
            Some(key) => after = Some(key),
            None => {
                return Reply::error(
                    "ERR unknown or expired SCAN cursor; start the scan again from 0",
                );
            }
        }
    }
    let mut out = Bounded::new(budget);
    let mut left = count;
    let mut exhausted = false;
    while left > 0 {
        let want = left.min(PAGE);
        let page = match engine.scan(after.as_deref(), want) {
            Ok(page) => page,
            Err(e) => return engine_error(&e),
        };
        exhausted = page.len() < want;
        left -= page.len();
        if let Some(last) = page.last() {
            after = Some(last.clone());
        }
        for key in page {
            let wanted = !no_type_match
                && pattern
                    .as_ref()
                    .is_none_or(|p| glob_match(p, key.as_bytes()));
            if wanted && !out.push(key) {
                return over_budget(budget);
            }
        }
        if exhausted {
            break;
        }
    }
    let next = match after {
        Some(key) if !exhausted => match ctx.cursors.lock() {
            Ok(mut table) => table.insert(key),
            // A poisoned table: a panic elsewhere while it was held; its
            // contents are still a valid queue.
            Err(poisoned) => poisoned.into_inner().insert(key),
        },
        _ => 0,
    };
    Reply::array(vec![Reply::bulk(next.to_string()), Reply::array(out.items)])
}

fn all_keys<E: KvsEngine>(engine: &E, budget: usize, pattern: &[u8]) -> Reply {
    let match_all = pattern == b"*";
    let mut out = Bounded::new(budget);
    let mut after: Option<String> = None;
    loop {
        let page = match engine.scan(after.as_deref(), PAGE) {
            Ok(page) => page,
            Err(e) => return engine_error(&e),
        };
        let done = page.len() < PAGE;
        if let Some(last) = page.last() {
            after = Some(last.clone());
        }
        for key in page {
            if (match_all || glob_match(pattern, key.as_bytes())) && !out.push(key) {
                return over_budget(budget);
            }
        }
        if done {
            return Reply::array(out.items);
        }
    }
}

/// One element of a compiled glob pattern.
enum Token<'a> {
    /// `*`: any run of bytes.
    Star,
    /// `?`: any one byte.
    Any,
    /// A byte to match exactly.
    Byte(u8),
    /// `[...]`: the raw class body and whether it is negated.
    Class(&'a [u8], bool),
}

/// Whether `s` matches the Redis glob `pattern` (`*`, `?`, `[abc]`,
/// `[^a-z]`, `\` escapes; case-sensitive), as Redis's `stringmatchlen`.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let tokens = tokenize(pattern);
    // Classic wildcard matching with one backtrack point: correct because
    // every token but `*` matches exactly one byte.
    let (mut t, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, i));
                t += 1;
                continue;
            }
            Some(tok) if one_matches(tok, s[i]) => {
                t += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, si)) => {
                t = st + 1;
                i = si + 1;
                star = Some((st, si + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|tok| matches!(tok, Token::Star))
}

fn tokenize(p: &[u8]) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => tokens.push(Token::Star),
            b'?' => tokens.push(Token::Any),
            b'\\' if i + 1 < p.len() => {
                i += 1;
                tokens.push(Token::Byte(p[i]));
            }
            b'[' => {
                let negated = p.get(i + 1) == Some(&b'^');
                let start = i + 1 + usize::from(negated);
                // The class ends at the first `]` not escaped and not the
                // end of a range; unclosed, it takes the rest of the
                // pattern (as Redis's does).
                let mut j = start;
                while j < p.len() && p[j] != b']' {
                    if p[j] == b'\\' && j + 1 < p.len() {
                        j += 2;
                    } else if j + 2 < p.len() && p[j + 1] == b'-' {
                        j += 3;
                    } else {
                        j += 1;
                    }
                }
                let end = j.min(p.len());
                tokens.push(Token::Class(&p[start..end], negated));
                i = end;
            }
            b => tokens.push(Token::Byte(b)),
        }
        i += 1;
    }
    tokens
}

fn one_matches(tok: &Token<'_>, c: u8) -> bool {
    match *tok {
        Token::Star => false,
        Token::Any => true,
        Token::Byte(b) => b == c,
        Token::Class(body, negated) => {
            let mut hit = false;
            let mut j = 0;
            while j < body.len() {
                if body[j] == b'\\' && j + 1 < body.len() {
                    hit |= body[j + 1] == c;
                    j += 2;
                } else if j + 2 < body.len() && body[j + 1] == b'-' {
                    let (lo, hi) = (body[j].min(body[j + 2]), body[j].max(body[j + 2]));
                    hit |= (lo..=hi).contains(&c);
                    j += 3;
                } else {
                    hit |= body[j] == c;
                    j += 1;
                }
            }
            hit != negated
        }
    }
}
