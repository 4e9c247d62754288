//! include/memtrim.h mirrors the page of the Rust code: its stats struct is generated from the
//! table of fields (crates/common/src/stats.rs), and a C program compiled against the header
//! prints the offset and size of every field of the table and of every header word, which must
//! equal Rust's. The benchmarks' Python reader of the page (scripts/bench_servers/page.py)
//! refuses what the CLI's reader refuses.
//! Tools: gcc, python3 (each required on CI, skipped with a message elsewhere).
mod common;
use common::{TempDir, cli, require_tool, root, run, show, text};
use core::mem::{offset_of, size_of};
use memtrim_common::fields::{Field, Type};
use memtrim_common::page::{Control, FIELDS, MAGIC, Page, STATS_OFFSET, WORDS, checksum};
use std::process::Command;

const BEGIN: &str = "/* BEGIN generated */\n";
const END: &str = "/* END generated */\n";

fn c_declaration(f: &Field) -> String {
    match f.ty {
        Type::U32 => format!("uint32_t {};", f.name),
        Type::U64 => format!("uint64_t {};", f.name),
        Type::Text(n) => format!("char {}[{n}];", f.name),
        Type::U64s(n) => format!("uint64_t {}[{n}];", f.name),
    }
}

/// The header's stats struct as the table says it: one line per field, with its help; a
/// comment at each change of section.
fn stats_struct() -> String {
    let mut c = format!(
        "{BEGIN}/* From the table of fields in crates/common/src/stats.rs: `MEMTRIM_WRITE_HEADER=1 cargo test --test layout`\n * writes it. */\nstruct memtrim_page_stats {{\n"
    );
    let mut section = "";
    for f in FIELDS {
        assert!(!f.help.contains("*/"), "{}: the help would end the C comment", f.name);
        if f.section != section {
            section = f.section;
            c += &format!("  /* {section} */\n");
        }
        c += &format!("  {:<32} /* {} */\n", c_declaration(f), f.help);
    }
    c += "};\n";
    c += &format!("MEMTRIM_STATIC_ASSERT(sizeof(struct memtrim_page_stats) == {}, \"memtrim_page_stats size\");\n", size_of::<memtrim_common::page::Stats>());
    c + END
}

#[test]
fn header_stats_struct_is_the_tables() {
    let path = common::root().join("include/memtrim.h");
    let header = std::fs::read_to_string(&path).unwrap();
    let (start, end) = (header.find(BEGIN).expect("no BEGIN generated in the header"), header.find(END).expect("no END generated") + END.len());
    let want = stats_struct();
    if std::env::var_os("MEMTRIM_WRITE_HEADER").is_some() {
        std::fs::write(&path, format!("{}{want}{}", &header[..start], &header[end..])).unwrap();
        return;
    }
    assert_eq!(&header[start..end], want, "include/memtrim.h's stats struct is not the table's (MEMTRIM_WRITE_HEADER=1 cargo test --test layout rewrites it)");
}

#[test]
fn header_offsets_match_rust() {
    if !common::require_tool("gcc") {
        return;
    }
    let control = offset_of!(Page, control);
    let mut rust: Vec<(String, usize)> = vec![
        ("memtrim_page.magic".into(), offset_of!(Page, magic)),
        ("memtrim_page.layout_version".into(), offset_of!(Page, layout_version)),
        ("memtrim_page.header_size".into(), offset_of!(Page, header_size)),
        ("memtrim_page.seq".into(), offset_of!(Page, seq)),
        ("memtrim_page.stats_offset".into(), offset_of!(Page, stats_offset)),
        ("memtrim_page.stats_size".into(), offset_of!(Page, stats_size)),
        ("memtrim_page.trim_requested".into(), control + offset_of!(Control, trim_requested)),
        ("memtrim_page.trim_served".into(), control + offset_of!(Control, trim_served)),
        ("memtrim_page.report_requested".into(), control + offset_of!(Control, report_requested)),
        ("memtrim_page.report_served".into(), control + offset_of!(Control, report_served)),
        ("memtrim_page.control_reserved".into(), control + offset_of!(Control, reserved)),
        ("memtrim_page.stats".into(), STATS_OFFSET),
    ];
    for f in FIELDS {
        rust.push((format!("memtrim_page_stats.{}", f.name), f.offset));
        rust.push((format!("size.memtrim_page_stats.{}", f.name), f.ty.size()));
    }
    rust.push(("sizeof.memtrim_page_stats".into(), size_of::<memtrim_common::page::Stats>()));

    let mut c = String::from("#include <stdio.h>\n#include \"memtrim.h\"\nint main(void) {\n");
    for (name, _) in &rust {
        let expr = match name.split('.').collect::<Vec<_>>()[..] {
            ["sizeof", t] => format!("sizeof(struct {t})"),
            ["size", t, f] => format!("sizeof(((struct {t} *)0)->{f})"),
            [t, f] => format!("offsetof(struct {t}, {f})"),
            _ => unreachable!(),
        };
        c += &format!("  printf(\"{name} %zu\\n\", {expr});\n");
    }
    c += "  return 0;\n}\n";
    let dir = std::env::temp_dir().join(format!("memtrim-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layout.c"), c).unwrap();
    let st = Command::new("gcc")
        .arg(format!("-I{}", common::root().join("include").display()))
        .args(["-o", "layout", "layout.c"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "the header does not compile (a static assert failed?)");
    let out = common::text(&Command::new(dir.join("layout")).output().unwrap().stdout);
    let expected: String = rust.iter().map(|(n, o)| format!("{n} {o}\n")).collect();
    assert_eq!(out, expected);
    std::fs::remove_dir_all(dir).ok();
}

/// `memtrim fields --json`, which readers in other languages take the layout from (the
/// benchmarks' Python reader does), says what the table says: every field, in order, with its
/// offset and size, and the layout version.
#[test]
fn fields_json_is_the_table() {
    let o = Command::new(common::cli()).args(["fields", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", common::show(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["layout_version"].as_u64(), Some(memtrim_common::page::LAYOUT_VERSION as u64));
    let listed = j["fields"].as_array().unwrap();
    assert_eq!(listed.len(), FIELDS.len());
    for (l, f) in listed.iter().zip(FIELDS) {
        assert_eq!(
            (l["name"].as_str(), l["offset"].as_u64(), l["size"].as_u64()),
            (Some(f.name), Some(f.offset as u64), Some(f.ty.size() as u64)),
            "{}",
            f.name
        );
    }
}

/// A page file whose header puts `words` (sealed here) at `offset`.
fn write_page(path: &std::path::Path, offset: usize, mut words: Vec<u64>) {
    words[0] = checksum(&words);
    let mut b = vec![0u8; 4096];
    b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    b[12..16].copy_from_slice(&((offset + words.len() * 8) as u32).to_le_bytes());
    b[16..24].copy_from_slice(&2u64.to_le_bytes());
    b[24..28].copy_from_slice(&(offset as u32).to_le_bytes());
    b[28..32].copy_from_slice(&((words.len() * 8) as u32).to_le_bytes());
    for (i, w) in words.iter().enumerate() {
        b[offset + i * 8..offset + i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn page_py_refuses_what_the_cli_refuses() {
    if !require_tool("python3") {
        return;
    }
    let tmp = TempDir::new("page-py");
    let pid_word = 4242 | (1 << 32);
    write_page(&tmp.join("short"), STATS_OFFSET, vec![0, pid_word]);
    let mut full = vec![0u64; WORDS];
    full[1] = pid_word;
    write_page(&tmp.join("over"), 32, full);
    for name in ["short", "over"] {
        let script = format!(
            "import sys; sys.path.insert(0, {:?}); import page; print(page.read({:?}) is None)",
            root().join("scripts/bench_servers").display().to_string(),
            tmp.join(name).display().to_string()
        );
        let o = run(Command::new("python3").args(["-c", &script]).env("MEMTRIM_CLI", cli()));
        assert_eq!(text(&o.stdout).trim(), "True", "page.py read the page {name} (stats the CLI refuses): {}", show(&o));
    }
}
