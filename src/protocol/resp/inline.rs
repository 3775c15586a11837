//! Inline commands: one line split into arguments the way Redis's
//! `sdssplitargs` splits it.

use bytes::Bytes;

/// Splits an inline command line (without its line end) into arguments.
///
/// Blanks separate arguments; `"..."` takes `\xHH`, `\n`, `\r`, `\t`,
/// `\b`, `\a` and `\<any>` escapes; `'...'` takes only `\'`; a closing
/// quote must be followed by a blank or the end. `None` for unbalanced
/// quotes. A NUL byte ends the line, as it ends Redis's C string.
pub(super) fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = line.get(i).copied();
            if in_double {
                match c {
                    None => return None,
                    Some(b'\\') => match (line.get(i + 1), line.get(i + 2), line.get(i + 3)) {
                        (Some(b'x'), Some(&h), Some(&l))
                            if hex(h).is_some() && hex(l).is_some() =>
                        {
                            arg.push(hex(h)? << 4 | hex(l)?);
                            i += 3;
                        }
                        (Some(&e), _, _) => {
                            arg.push(match e {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            i += 1;
                        }
                        (None, _, _) => arg.push(b'\\'),
                    },
                    Some(b'"') => {
                        if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else if in_single {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        arg.push(b'\'');
                        i += 1;
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => arg.push(other),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(arg));
    }
}

/// C's `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
