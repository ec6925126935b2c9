/* The one definition of what Sonde's kernel programs send to userspace.
 *
 * The Rust side (receiver-ebpf/src/event.rs) mirrors these structs and checks size and field
 * offsets against this header at compile time (receiver-ebpf/build.rs emits them with
 * offsetof/sizeof through clang), so a change here that is not made there fails the build.
 *
 * Everything is naturally aligned and padded explicitly: no compiler-dependent layout.
 */
#ifndef SONDE_EVENT_H
#define SONDE_EVENT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Upper bound of the payload prefix copied per event; the runtime size (the receiver's
 * `payload_size`) is at most this. Must be a power of two (the verifier bounds copies with a
 * mask). */
#define SONDE_MAX_PAYLOAD 1024

enum sonde_event_kind {
	SONDE_EV_DATA = 1,       /* bytes read or written on a TCP socket */
	SONDE_EV_ACCEPT = 2,     /* a connection accepted: the process is the server side */
	SONDE_EV_CONNECT = 3,    /* a connection made: the process is the client side */
	SONDE_EV_CLOSE = 4,      /* a traced connection ended */
	SONDE_EV_PROC_EXEC = 5,  /* any process exec'd (discovery hint, not filtered) */
	SONDE_EV_PROC_EXIT = 6,  /* a process exited (discovery hint) */
	SONDE_EV_LISTEN = 7,     /* a process started listening (discovery hint) */
	SONDE_EV_PROC_FORK = 8,  /* a selected process forked a new process, selected with it */
};

enum sonde_direction {
	SONDE_DIR_NONE = 0,
	SONDE_DIR_RECV = 1,
	SONDE_DIR_SEND = 2,
};

enum sonde_role {
	SONDE_ROLE_UNKNOWN = 0,
	SONDE_ROLE_SERVER = 1, /* the connection was accepted (passive open) */
	SONDE_ROLE_CLIENT = 2, /* the connection was made by connect (active open) */
};

enum sonde_syscall {
	SONDE_SYS_NONE = 0,
	SONDE_SYS_READ = 1,
	SONDE_SYS_WRITE = 2,
	SONDE_SYS_READV = 3,
	SONDE_SYS_WRITEV = 4,
	SONDE_SYS_SENDTO = 5,
	SONDE_SYS_RECVFROM = 6,
	SONDE_SYS_SENDMSG = 7,
	SONDE_SYS_RECVMSG = 8,
	SONDE_SYS_SENDFILE = 9,
	SONDE_SYS_ACCEPT = 10,
	SONDE_SYS_CONNECT = 11,
	SONDE_SYS_CLOSE = 12,
};

/* A TCP connection seen from the traced process: local (s) and remote (d) address, network
 * byte order; IPv4 addresses use the IPv4-mapped IPv6 form (::ffff:a.b.c.d). Ports are in
 * host byte order. */
struct sonde_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 _pad;
};

struct sonde_event_header {
	__u64 ts_boot_ns;   /* bpf_ktime_get_boot_ns() when the socket layer moved the bytes */
	__u64 cgroup_id;    /* cgroup v2 id (inode of the cgroup directory) */
	__u64 sock_id;      /* kernel address of the struct sock: a connection's identity */
	__s64 ret;          /* bytes moved (DATA), the parent (PROC_FORK) */
	__u32 pid;          /* tgid */
	__u32 tid;
	__s32 fd;
	__u32 payload_len;  /* bytes of payload[] that are valid */
	__u8 kind;          /* enum sonde_event_kind */
	__u8 direction;     /* enum sonde_direction */
	__u8 role;          /* enum sonde_role */
	__u8 syscall;       /* enum sonde_syscall */
	__u32 _pad;
	struct sonde_tuple tuple;
	char comm[16];
};

struct sonde_event {
	struct sonde_event_header h;
	__u8 payload[SONDE_MAX_PAYLOAD];
};

/* What each kind fills besides kind/pid/tid/comm/cgroup_id/ts_boot_ns, with the socket-layer
 * hooks (sonde.bpf.c); the syscall fallback (sonde_syscalls.bpf.c) differs where noted [sys]:
 * - DATA: sock_id, ret (bytes moved, > 0), direction, role, syscall (SONDE_SYS_NONE when the
 *   bytes moved outside the syscalls listed, e.g. io_uring or sendmmsg: then no payload), fd
 *   (-1 when the syscall did not say), tuple, payload_len and that many payload bytes right
 *   after the header. The record is exactly sizeof(header) + payload_len bytes long (sendfile:
 *   payload_len 0). comm, cgroup_id and fd are the process's when it first moved data on the
 *   connection (cached per connection, not read on every call). One event per call of the
 *   socket layer: a sendfile may make several. [sys: one per syscall, fd always set.]
 * - ACCEPT / CONNECT: the connection (sock_id, fd, role, tuple) right before its first DATA
 *   event, sent only when the process is seen from the connection's first byte; ts_boot_ns is
 *   when the connection was set up (the handshake), before that first event. A connection set
 *   up before the programs were loaded, or that carried data before its process was selected,
 *   has none: its DATA events start mid-stream. [sys: at every accept/connect return, ts then,
 *   ret the accept's fd or connect's 0/-EINPROGRESS.]
 * - CLOSE: sock_id, fd and role of a connection a selected process moved data on, when TCP is
 *   done with it (TCP_CLOSE: after close() and the FIN exchange, a reset, an abort, or its
 *   process dying); tid is 0 and comm/cgroup_id are empty (often softirq context). [sys: at
 *   the close() that released the fd, with the closing task's ids, or at TCP_CLOSE when no
 *   close() came first.]
 * - LISTEN: sock_id, the local address/port in tuple.saddr/sport, and fd when listen(2) said.
 * - PROC_EXEC / PROC_EXIT: nothing else (pid is the process; exit is sent once the last
 *   thread of the process exits).
 * - PROC_FORK: pid is the new process (selected in the kernel already, before its first
 *   syscall), tid its first thread (the same id), ret the parent's tgid.
 * Fields a kind does not use are zero (fd: -1). */

/* The layout is part of the contract with userspace: both the BPF and the host compiler must
 * agree with the Rust mirror. */
#define SONDE_EVENT_HEADER_SIZE 112
_Static_assert(sizeof(struct sonde_tuple) == 40, "sonde_tuple layout");
_Static_assert(sizeof(struct sonde_event_header) == SONDE_EVENT_HEADER_SIZE,
	       "sonde_event_header layout");

/* Selection, filled by userspace: a process is traced if its tgid is in sonde_pids or its
 * cgroup v2 id is in sonde_cgroups. Everything else returns after these checks.
 *
 * sonde_pids is a bitmap (an array of 64-bit words, bit tgid % 64 of word tgid / 64) covering
 * every possible pid (PID_MAX_LIMIT is 4M on 64-bit): an array lookup is inlined by the
 * verifier, so the check costs a few instructions instead of a hash lookup on every syscall of
 * every process. sonde_cgroups is a hash, consulted only while sonde_config says at least one
 * cgroup is selected (reading the current cgroup id is not free). */
#define SONDE_PID_BITMAP_WORDS 65536
#define SONDE_MAX_CGROUPS 4096

/* sonde_config (a one-entry array) tells the programs what userspace has selected. */
struct sonde_config {
	__u32 cgroups_selected; /* number of entries in sonde_cgroups */
	__u32 _pad;
};
_Static_assert(sizeof(struct sonde_config) == 8, "sonde_config layout");

/* Counters in a per-CPU array, indexed by enum sonde_counter; userspace sums over CPUs. */
enum sonde_counter {
	SONDE_CNT_EVENTS = 0,       /* events submitted to the ring buffer */
	SONDE_CNT_LOST = 1,         /* events dropped because the ring buffer was full */
	SONDE_CNT_FILTERED_IN = 2,  /* program runs for selected processes (socket hooks: socket data
	                             * calls; syscall hooks: syscall exits) */
	SONDE_CNT_NOT_SOCKET = 3,   /* of those, not on a process's TCP socket */
	SONDE_CNT_READ_ERRORS = 4,  /* a kernel/user memory read failed */
	SONDE_CNT_MAX = 5,
};

#endif
