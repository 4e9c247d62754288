//! `memtrim --version`: this program's version, the libmemtrim.so `memtrim run` would preload,
//! and the oldest glibc that library loads on, read from the versions its ELF file needs
//! (.gnu.version_r): what the loader checks before it loads it.
use crate::output::print_or_quiet;
use crate::run;
use std::path::Path;

pub fn main() -> i32 {
    let library = match run::find_lib() {
        Some(lib) => match glibc_floor(&lib) {
            Some((a, b)) => format!("library: {} (needs glibc >= {a}.{b}, x86_64)", lib.display()),
            None => format!("library: {} (its glibc versions could not be read)", lib.display()),
        },
        None => format!("library: not found ({})", run::SEARCHED),
    };
    print_or_quiet(&format!("memtrim {}\n{library}", env!("CARGO_PKG_VERSION")))
}

/// The highest GLIBC_x.y among the versions an ELF64 little-endian file needs.
pub fn glibc_floor(path: &Path) -> Option<(u32, u32)> {
    let f = std::fs::read(path).ok()?;
    let u16_at = |o: usize| Some(u16::from_le_bytes(f.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(f.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(f.get(o..o + 8)?.try_into().ok()?) as usize);
    if f.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize, shnum) = (u64_at(0x28)?, usize::from(u16_at(0x3a)?), usize::from(u16_at(0x3c)?));
    const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
    let section = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let verneed = (0..shnum).filter_map(section).find(|&s| u32_at(s + 4) == Some(SHT_GNU_VERNEED))?;
    let (off, link, count) = (u64_at(verneed + 0x18)?, u32_at(verneed + 0x28)? as usize, u32_at(verneed + 0x2c)? as usize);
    let strtab = u64_at(section(link)? + 0x18)?;
    let name = |o: u32| -> Option<&[u8]> {
        let s = f.get(strtab.checked_add(o as usize)?..)?;
        s.get(..s.iter().position(|&b| b == 0)?)
    };
    // Entries are 16 bytes each: no more of them than the section holds, and a zero `next` ends
    // a list (a crafted count must not make this loop for ever).
    let most = u64_at(verneed + 0x20)? / 16;
    let mut best = None;
    let mut need = off;
    for _ in 0..count.min(most) {
        let (cnt, aux, next) = (u16_at(need + 2)?, u32_at(need + 8)?, u32_at(need + 12)?);
        let mut a = need.checked_add(aux as usize)?;
        for _ in 0..usize::from(cnt).min(most) {
            let v = name(u32_at(a + 8)?).and_then(|n| n.strip_prefix(b"GLIBC_")).and_then(glibc_version);
            best = best.max(v);
            let step = u32_at(a + 12)?;
            if step == 0 {
                break;
            }
            a = a.checked_add(step as usize)?;
        }
        if next == 0 {
            break;
        }
        need = need.checked_add(next as usize)?;
    }
    best
}

/// The glibc release a GLIBC_ version name stands for: `2.34`, or `ABI_DT_RELR` (packed
/// relative relocations, which glibc reads from 2.36).
fn glibc_version(v: &[u8]) -> Option<(u32, u32)> {
    if v == b"ABI_DT_RELR" {
        return Some((2, 36));
    }
    parse_version(v)
}

fn parse_version(v: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.split('.').map(|n| n.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}
