//! Compiles the kernel programs in ../probes into OUT_DIR/sonde.bpf.o and
//! OUT_DIR/sonde_syscalls.bpf.o (both embedded by loader.rs),
//! and extracts the event header's layout with the host compiler into
//! OUT_DIR/sonde_event_layout.rs, so event.rs can check its Rust mirror at compile time.
//!
//! Needs clang (and libbpf's headers); no bpftool, no kernel BTF at build time: the kernel types
//! the programs read are declared in probes/include/sonde_kernel.h and relocated at load time.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL_HINT: &str = "install the eBPF toolchain: `apt-get install clang llvm libbpf-dev` \
     (or set SONDE_CLANG to a clang binary that can target bpf)";

/// Every field of the two structs userspace decodes; event.rs asserts each offset.
const LAYOUT: &[(&str, &[&str])] = &[
    (
        "sonde_event_header",
        &[
            "ts_boot_ns",
            "cgroup_id",
            "sock_id",
            "ret",
            "pid",
            "tid",
            "fd",
            "payload_len",
            "kind",
            "direction",
            "role",
            "syscall",
            "_pad",
            "tuple",
            "comm",
        ],
    ),
    ("sonde_tuple", &["saddr", "daddr", "sport", "dport", "_pad"]),
    ("sonde_config", &["cgroups_selected", "_pad"]),
];

/// Constants of the header that userspace uses, with their Rust type.
const CONSTANTS: &[(&str, &str)] = &[
    ("SONDE_MAX_PAYLOAD", "u32"),
    ("SONDE_PID_BITMAP_WORDS", "u32"),
    ("SONDE_MAX_CGROUPS", "u32"),
    ("SONDE_EV_DATA", "u8"),
    ("SONDE_EV_ACCEPT", "u8"),
    ("SONDE_EV_CONNECT", "u8"),
    ("SONDE_EV_CLOSE", "u8"),
    ("SONDE_EV_PROC_EXEC", "u8"),
    ("SONDE_EV_PROC_EXIT", "u8"),
    ("SONDE_EV_LISTEN", "u8"),
    ("SONDE_EV_PROC_FORK", "u8"),
    ("SONDE_DIR_NONE", "u8"),
    ("SONDE_DIR_RECV", "u8"),
    ("SONDE_DIR_SEND", "u8"),
    ("SONDE_ROLE_UNKNOWN", "u8"),
    ("SONDE_ROLE_SERVER", "u8"),
    ("SONDE_ROLE_CLIENT", "u8"),
    ("SONDE_SYS_NONE", "u8"),
    ("SONDE_SYS_READ", "u8"),
    ("SONDE_SYS_WRITE", "u8"),
    ("SONDE_SYS_READV", "u8"),
    ("SONDE_SYS_WRITEV", "u8"),
    ("SONDE_SYS_SENDTO", "u8"),
    ("SONDE_SYS_RECVFROM", "u8"),
    ("SONDE_SYS_SENDMSG", "u8"),
    ("SONDE_SYS_RECVMSG", "u8"),
    ("SONDE_SYS_SENDFILE", "u8"),
    ("SONDE_SYS_ACCEPT", "u8"),
    ("SONDE_SYS_CONNECT", "u8"),
    ("SONDE_SYS_CLOSE", "u8"),
    ("SONDE_CNT_EVENTS", "u32"),
    ("SONDE_CNT_LOST", "u32"),
    ("SONDE_CNT_FILTERED_IN", "u32"),
    ("SONDE_CNT_NOT_SOCKET", "u32"),
    ("SONDE_CNT_READ_ERRORS", "u32"),
    ("SONDE_CNT_MAX", "u32"),
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let probes = manifest.join("..").join("probes");
    let include = probes.join("include");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", probes.join("src").display());
    println!("cargo:rerun-if-changed={}", include.display());
    for entry in [&probes.join("src"), &include] {
        if let Ok(dir) = fs::read_dir(entry) {
            for file in dir.flatten() {
                println!("cargo:rerun-if-changed={}", file.path().display());
            }
        }
    }
    println!("cargo:rerun-if-env-changed=SONDE_CLANG");

    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        println!(
            "cargo:warning=the kernel programs read x86-64 syscall registers; on this target \
             they load but every capture is counted as a read error"
        );
    }

    let clang = env::var("SONDE_CLANG").unwrap_or_else(|_| "clang".to_owned());
    check_clang(&clang);

    // Two objects with the same maps and events: socket-layer tracepoints, and the syscall
    // tracepoint fallback for kernels without them (the loader picks one).
    for name in ["sonde", "sonde_syscalls"] {
        let source = probes.join("src").join(format!("{name}.bpf.c"));
        let object = out.join(format!("{name}.bpf.o"));
        compile_bpf(&clang, &source, &include, &object);
        strip_dwarf(&object);
    }

    let layout = host_layout(&clang, &include, &out);
    write(&out.join("sonde_event_layout.rs"), &layout);
}

fn fail(msg: &str) -> ! {
    // A panic message is what cargo shows for a failed build script.
    panic!("\n\nreceiver-ebpf: {msg}\n\n")
}

fn run(cmd: &mut Command, what: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => fail(&format!(
            "{what}: {:?} not found; {INSTALL_HINT}",
            cmd.get_program()
        )),
        Err(e) => fail(&format!("{what}: running {:?}: {e}", cmd.get_program())),
    }
}

fn check_clang(clang: &str) {
    let out = run(Command::new(clang).arg("--version"), "checking clang");
    if !out.status.success() {
        fail(&format!("`{clang} --version` failed; {INSTALL_HINT}"));
    }
}

fn compile_bpf(clang: &str, source: &Path, include: &Path, object: &Path) {
    let out = run(
        Command::new(clang)
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-Wall",
            ])
            .arg("-I")
            .arg(include)
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(object),
        "compiling the eBPF programs",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("bpf/bpf_helpers.h") || stderr.contains("bpf_core_read.h") {
            fail(&format!(
                "libbpf's headers (bpf/bpf_helpers.h) are missing; {INSTALL_HINT}\n{stderr}"
            ));
        }
        fail(&format!("compiling {} failed:\n{stderr}", source.display()));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={line}");
    }
}

/// DWARF is only needed by humans; .BTF/.BTF.ext (kept by -g) are what the loader relocates
/// with. Optional: without llvm-strip the object is just larger.
fn strip_dwarf(object: &Path) {
    for strip in [
        "llvm-strip",
        "llvm-strip-14",
        "llvm-strip-15",
        "llvm-strip-16",
    ] {
        match Command::new(strip).arg("-g").arg(object).output() {
            Ok(out) if out.status.success() => return,
            Ok(out) => {
                println!(
                    "cargo:warning={strip} -g failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return;
            }
            Err(_) => continue,
        }
    }
}

/// Builds and runs a host C program that prints the header's sizes, offsets and constants as
/// Rust consts.
fn host_layout(clang: &str, include: &Path, out: &Path) -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"sonde_event.h\"\n\
         #define SIZEOF_FIELD(s, f) sizeof(((struct s *)0)->f)\n\
         int main(void) {\n",
    );
    for (st, fields) in LAYOUT {
        let upper = st.to_uppercase();
        let _ = writeln!(
            c,
            "  printf(\"pub const {upper}_SIZE: usize = %zu;\\n\", sizeof(struct {st}));"
        );
        for f in *fields {
            let fu = f.trim_start_matches('_').to_uppercase();
            let _ = writeln!(
                c,
                "  printf(\"pub const {upper}_{fu}_OFFSET: usize = %zu;\\n\", offsetof(struct {st}, {f}));"
            );
            let _ = writeln!(
                c,
                "  printf(\"pub const {upper}_{fu}_SIZE: usize = %zu;\\n\", SIZEOF_FIELD({st}, {f}));"
            );
        }
    }
    for (name, ty) in CONSTANTS {
        let _ = writeln!(
            c,
            "  printf(\"pub const {name}: {ty} = %lld;\\n\", (long long)({name}));"
        );
    }
    c.push_str("  return 0;\n}\n");

    let src = out.join("sonde_layout.c");
    let exe = out.join("sonde_layout");
    write(&src, &c);
    let built = run(
        Command::new(clang)
            .arg("-I")
            .arg(include)
            .arg(&src)
            .arg("-o")
            .arg(&exe),
        "building the layout probe",
    );
    if !built.status.success() {
        fail(&format!(
            "building the host layout probe failed (needs the C library headers, e.g. \
             libc6-dev):\n{}",
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    let ran = run(&mut Command::new(&exe), "running the layout probe");
    if !ran.status.success() {
        fail("the layout probe failed");
    }
    let mut rs = String::from("// Generated by build.rs from probes/include/sonde_event.h.\n");
    rs.push_str(&String::from_utf8_lossy(&ran.stdout));
    rs
}

fn write(path: &Path, contents: &str) {
    if let Err(e) = fs::write(path, contents) {
        fail(&format!("writing {}: {e}", path.display()));
    }
}
