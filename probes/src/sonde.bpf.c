// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sonde's kernel programs: TCP payload capture for selected processes, from syscall exit
 * tracepoints (no sys_enter program), plus three tracepoints that are not syscall ones: sched
 * exec/exit (discovery hints, selection cleanup), the BTF tracepoints sched_process_fork (a
 * selected process's children are selected before their first syscall) and
 * sock:inet_sock_set_state (connections that end without a close()).
 *
 * Why exit-only: an enter/exit pair costs every process two program runs per syscall; at exit
 * the return value is in the tracepoint context and the arguments are still in the task's saved
 * user registers, so one run is enough (measured in ebpf-on-these-machines.md: ~0.99 throughput
 * for unselected processes vs ~0.93 with pairs).
 *
 * Every syscall program starts with the selection check (tgid in sonde_pids, or cgroup id in
 * sonde_cgroups and tgid not in sonde_deny) and returns at once otherwise. An unselected
 * process still pays the kernel's syscall-tracepoint path: measured here (examples/
 * syscall_cost, 6.18) +160-176 ns on a hooked syscall and +55-76 ns on any other syscall.
 * The discovery hints (exec, exit, listen) are the exception: they are rare and userspace needs
 * them for processes it has not selected yet.
 *
 * Events are submitted with BPF_RB_NO_WAKEUP: userspace drains on a timer, because a wake-up
 * per event cost more than everything else together on two shared cores.
 *
 * Needs a kernel with BTF and >= 5.15 (bpf_task_pt_regs; ring buffer 5.8,
 * bpf_get_current_task_btf 5.11). The task's pointers are followed with BTF-typed loads where
 * the verifier allows it (much cheaper than a probe-read helper call each), and a connection's
 * tuple, TCP check, comm and cgroup id are cached per (tgid, fd) and checked against the struct
 * file at the fd. Measured with kernel.bpf_stats_enabled on nginx under wrk (2026-12-05, 6.18):
 * recvfrom ~0.45 us and writev (two iovecs) ~0.75 us per event, of which the ring buffer output
 * is ~0.14 us, each bpf_probe_read_user ~0.08-0.15 us and the boot-clock read ~0.05 us.
 */
#include "sonde_kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "sonde_event.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load; frozen afterwards, so the verifier sees them as constants. */
const volatile __u32 payload_size = 256;
const volatile __u32 self_tgid = 0;

/* iovecs walked per readv/writev/sendmsg/recvmsg to fill the payload prefix. */
#define SONDE_MAX_IOV 4

#define SONDE_MAX_CONNS 65536

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} sonde_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SONDE_PID_BITMAP_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} sonde_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SONDE_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, __u8);
} sonde_cgroups SEC(".maps");

/* Processes inside a selected cgroup that must not be traced (exclude_instrument): a pid
 * bitmap like sonde_pids, consulted only when the cgroup check selects. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SONDE_PID_BITMAP_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} sonde_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sonde_config);
} sonde_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SONDE_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sonde_counters SEC(".maps");

/* Role of each socket fd seen in a selected process. Keyed by (tgid, fd) because that is what
 * close() gives; the sock address in the value detects an fd reused for another socket (dup2,
 * close_range, exec...) without a close we saw. LRU: entries of processes that died are
 * evicted, never block new ones. */
struct sonde_conn_key {
	__u32 tgid;
	__s32 fd;
};

struct sonde_conn {
	__u64 file;               /* the struct file at the fd: a hit skips the socket checks */
	__u64 sock_id;
	struct sonde_tuple tuple; /* a connected TCP socket's tuple does not change: read once */
	__u8 role;                /* enum sonde_role, or SONDE_CONN_NOT_TCP */
	__u8 _pad[7];
	/* Of the process when the connection was first seen: data events copy these instead of
	 * asking the kernel on every syscall. */
	__u64 cgroup_id;
	char comm[16];
};

/* A socket that is not TCP over IPv4/IPv6 (unix, UDP...), remembered so that its next calls
 * skip the protocol checks. Internal: never sent to userspace. */
#define SONDE_CONN_NOT_TCP 0xff

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SONDE_MAX_CONNS);
	__type(key, struct sonde_conn_key);
	__type(value, struct sonde_conn);
} sonde_conns SEC(".maps");

/* The TCP sockets in sonde_conns, by kernel address, for the life-cycle tracepoint: it often
 * runs in softirq context, where the current task says nothing about the socket's owner. */
struct sonde_sk_owner {
	__u32 tgid;
	__s32 fd;
	__u8 role;
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SONDE_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct sonde_sk_owner);
} sonde_socks SEC(".maps");

static __always_inline void remember_owner(__u64 sk, __u32 tgid, int fd, __u8 role)
{
	struct sonde_sk_owner o = {.tgid = tgid, .fd = fd, .role = role};
	bpf_map_update_elem(&sonde_socks, &sk, &o, BPF_ANY);
}

/* Data events are assembled here and copied to the ring buffer with their real length
 * (bpf_ringbuf_reserve needs a constant size; records of header + used payload keep the ring
 * compact). Twice the payload bound so that an iovec copy at offset < MAX of length <= MAX is
 * provably in bounds. */
struct sonde_scratch {
	struct sonde_event_header h;
	__u8 payload[2 * SONDE_MAX_PAYLOAD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sonde_scratch);
} sonde_scratch SEC(".maps");

/* Tracepoint contexts (tracefs format files; stable layout). */
struct sonde_sys_exit_ctx {
	__u64 common;
	int syscall_nr;
	int _pad;
	long ret;
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&sonde_counters, &idx);
	if (v)
		*v += 1;
}

/* The whole cost for an unselected process: two inlined array lookups (no helper call, no
 * hashing) unless a cgroup is selected. */
/* Pid bitmaps (sonde_pids, sonde_deny): bit tgid % 64 of word tgid / 64. The kernel programs
 * update them without atomics (fork sets a child's bit, exit clears a process's bits); a bit
 * lost to a concurrent update of the same word by userspace is restored by discovery. */
static __always_inline __u64 *pid_word(void *bitmap, __u32 tgid)
{
	__u32 word = tgid / 64;
	return bpf_map_lookup_elem(bitmap, &word);
}

static __always_inline bool pid_bit(void *bitmap, __u32 tgid)
{
	__u64 *w = pid_word(bitmap, tgid);
	return w && ((*w >> (tgid % 64)) & 1);
}

static __always_inline void clear_pid_bit(void *bitmap, __u32 tgid)
{
	__u64 *w = pid_word(bitmap, tgid);
	if (w && ((*w >> (tgid % 64)) & 1))
		*w &= ~(1ULL << (tgid % 64));
}

static __always_inline bool selected(__u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	if (pid_bit(&sonde_pids, tgid))
		return true;
	__u32 zero = 0;
	struct sonde_config *cfg = bpf_map_lookup_elem(&sonde_config, &zero);
	if (!cfg || !cfg->cgroups_selected)
		return false;
	__u64 cg = bpf_get_current_cgroup_id();
	if (!bpf_map_lookup_elem(&sonde_cgroups, &cg))
		return false;
	return !pid_bit(&sonde_deny, tgid);
}

/* The syscall's arguments, read at exit from the task's saved user registers and checked
 * against the syscall number (a mismatch is counted as a read error). */
struct sonde_args {
	unsigned long a1, a2, a3, a4;
};

static __always_inline int syscall_args(struct task_struct *task, long nr, struct sonde_args *a)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs || (long)regs->orig_ax != nr) {
		count(SONDE_CNT_READ_ERRORS);
		return -1;
	}
	a->a1 = regs->di;
	a->a2 = regs->si;
	a->a3 = regs->dx;
	a->a4 = regs->r10;
	return 0;
}

/* fd -> struct file, or NULL. task comes from bpf_get_current_task_btf(), so the first loads
 * are plain BTF-checked loads rather than probe-read helper calls. */
static __always_inline struct file *file_of_fd(struct task_struct *task, int fd)
{
	if (fd < 0)
		return 0;
	struct files_struct *files = task->files;
	if (!files)
		return 0;
	struct fdtable *fdt = files->fdt;
	if (!fdt)
		return 0;
	if ((unsigned int)fd >= fdt->max_fds)
		return 0;
	struct file **fds = fdt->fd;
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return 0;
	return f;
}

/* struct file -> struct sock if the file is a socket, or NULL. The inode mode is checked
 * before private_data is trusted to be a struct socket. */
static __always_inline struct sock *sock_of_file(struct file *f)
{
	if (!f)
		return 0;
	unsigned short mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *so = BPF_CORE_READ(f, private_data);
	if (!so)
		return 0;
	return BPF_CORE_READ(so, sk);
}

static __always_inline struct sock *sock_of_fd(struct task_struct *task, int fd)
{
	return sock_of_file(file_of_fd(task, fd));
}

/* AF_INET or AF_INET6 for a TCP socket, 0 otherwise. */
static __always_inline __u16 tcp_family(struct sock *sk)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);
	return fam == AF_INET || fam == AF_INET6 ? fam : 0;
}

static __always_inline void ipv4_mapped(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

static __always_inline void read_tuple(struct sock *sk, __u16 family, struct sonde_tuple *t)
{
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	t->_pad = 0;
	if (family == AF_INET) {
		ipv4_mapped(t->saddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		ipv4_mapped(t->daddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else {
		/* Not BPF_CORE_READ_INTO: it sizes the copy by *dst, one byte for an array. */
		bpf_core_read(t->saddr, sizeof(t->saddr), &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(t->daddr, sizeof(t->daddr), &sk->__sk_common.skc_v6_daddr);
	}
}

/* Every header field set but cgroup_id and comm, so no stale ring-buffer or scratch bytes
 * reach userspace (data events take those two from the connection cache). */
static __always_inline void init_header_base(struct sonde_event_header *h, __u8 kind,
					     __u64 pid_tgid)
{
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	h->sock_id = 0;
	h->ret = 0;
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->fd = -1;
	h->payload_len = 0;
	h->kind = kind;
	h->direction = SONDE_DIR_NONE;
	h->role = SONDE_ROLE_UNKNOWN;
	h->syscall = SONDE_SYS_NONE;
	h->_pad = 0;
	__builtin_memset(&h->tuple, 0, sizeof(h->tuple));
}

static __always_inline void init_header(struct sonde_event_header *h, __u8 kind, __u64 pid_tgid)
{
	init_header_base(h, kind, pid_tgid);
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* Fills sock_id, role and tuple of a data event from the connection cache, or from the
 * socket on the first event of a connection (one opened before Sonde, or by a syscall we do
 * not hook: its role is unknown, and it is cached so that its close is still reported). The
 * cache is keyed by (tgid, fd) and checked against the struct file at the fd, so the common
 * case costs one map lookup and one pointer read. False if the fd is not a TCP socket (files,
 * pipes and other sockets are cached as such too). */
static __always_inline bool conn_info(__u32 tgid, int fd, struct file *f,
				      struct sonde_event_header *h)
{
	struct sonde_conn_key key = {.tgid = tgid, .fd = fd};
	struct sonde_conn *c = bpf_map_lookup_elem(&sonde_conns, &key);
	if (c && c->file == (__u64)f) {
		if (c->role == SONDE_CONN_NOT_TCP)
			return false;
		h->sock_id = c->sock_id;
		h->role = c->role;
		h->cgroup_id = c->cgroup_id;
		__builtin_memcpy(h->comm, c->comm, sizeof(h->comm));
		__builtin_memcpy(&h->tuple, &c->tuple, sizeof(h->tuple));
		return true;
	}
	struct sock *sk = sock_of_file(f);
	struct sonde_conn nc = {.file = (__u64)f, .sock_id = (__u64)sk, .role = SONDE_ROLE_UNKNOWN};
	nc.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(nc.comm, sizeof(nc.comm));
	__u16 family = sk ? tcp_family(sk) : 0;
	if (family)
		read_tuple(sk, family, &nc.tuple);
	else
		nc.role = SONDE_CONN_NOT_TCP;
	bpf_map_update_elem(&sonde_conns, &key, &nc, BPF_ANY);
	if (!family)
		return false;
	remember_owner((__u64)sk, tgid, fd, SONDE_ROLE_UNKNOWN);
	h->sock_id = (__u64)sk;
	h->role = SONDE_ROLE_UNKNOWN;
	h->cgroup_id = nc.cgroup_id;
	__builtin_memcpy(h->comm, nc.comm, sizeof(h->comm));
	__builtin_memcpy(&h->tuple, &nc.tuple, sizeof(h->tuple));
	return true;
}

static __always_inline void submit_header(struct sonde_event_header *src)
{
	struct sonde_event_header *h = bpf_ringbuf_reserve(&sonde_events, sizeof(*h), 0);
	if (!h) {
		count(SONDE_CNT_LOST);
		return;
	}
	__builtin_memcpy(h, src, sizeof(*h));
	bpf_ringbuf_submit(h, BPF_RB_NO_WAKEUP);
	count(SONDE_CNT_EVENTS);
}

static __always_inline __u64 prefix_len(long ret)
{
	__u64 want = payload_size;
	if ((__u64)ret < want)
		want = (__u64)ret;
	barrier_var(want);
	/* payload_size is bounded by userspace; this bound is for the verifier. */
	if (want > SONDE_MAX_PAYLOAD)
		want = SONDE_MAX_PAYLOAD;
	return want;
}

/* Copies the first `want` bytes spread over the iovec array into e->payload. 64-bit arithmetic
 * and barrier_var keep clang from folding the bounds checks the verifier needs to see. */
static __always_inline int copy_iov(struct sonde_scratch *e, const struct sonde_iovec *iov,
				    unsigned long iovcnt, __u64 want)
{
	/* The iovec entries in one read (each helper call costs more than the bytes). */
	struct sonde_iovec vs[SONDE_MAX_IOV];
	__u64 cnt = iovcnt < SONDE_MAX_IOV ? iovcnt : SONDE_MAX_IOV;
	__u64 bytes = cnt * sizeof(struct sonde_iovec);
	barrier_var(bytes);
	if (bytes > sizeof(vs))
		bytes = sizeof(vs);
	if (bytes && bpf_probe_read_user(vs, bytes, iov))
		return -1;
	__u64 off = 0;
#pragma unroll
	for (int i = 0; i < SONDE_MAX_IOV; i++) {
		if (i >= cnt || off >= want)
			break;
		__u64 n = want - off;
		if (vs[i].iov_len < n)
			n = vs[i].iov_len;
		barrier_var(n);
		if (n > SONDE_MAX_PAYLOAD)
			n = SONDE_MAX_PAYLOAD;
		/* off < want <= MAX: a no-op that proves the bound. */
		off &= SONDE_MAX_PAYLOAD - 1;
		barrier_var(off);
		if (n && bpf_probe_read_user(&e->payload[off], n, vs[i].iov_base))
			return -1;
		off += n;
	}
	e->h.payload_len = off;
	return 0;
}

enum sonde_buf_kind {
	SONDE_BUF_PLAIN,  /* arg 2 is the buffer */
	SONDE_BUF_IOV,    /* arg 2 is an iovec array, arg 3 its length */
	SONDE_BUF_MSG,    /* arg 2 is a struct user_msghdr */
	SONDE_BUF_NONE,   /* sendfile: bytes only */
};

static __always_inline int handle_data(struct sonde_sys_exit_ctx *ctx, __u8 sys, __u8 dir,
				       enum sonde_buf_kind buf)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!selected(tgid))
		return 0;
	count(SONDE_CNT_FILTERED_IN);

	long ret = ctx->ret;
	if (ret <= 0)
		return 0;

	struct task_struct *task = bpf_get_current_task_btf();
	struct sonde_args regs;
	if (syscall_args(task, ctx->syscall_nr, &regs))
		return 0;
	/* Peeked bytes will be read again; reporting them twice would corrupt the stream. */
	if (sys == SONDE_SYS_RECVFROM && (regs.a4 & MSG_PEEK))
		return 0;
	if (sys == SONDE_SYS_RECVMSG && (regs.a3 & MSG_PEEK))
		return 0;

	int fd = (int)regs.a1;
	struct file *f = file_of_fd(task, fd);
	if (!f) {
		count(SONDE_CNT_NOT_SOCKET);
		return 0;
	}

	__u32 zero = 0;
	struct sonde_scratch *e = bpf_map_lookup_elem(&sonde_scratch, &zero);
	if (!e)
		return 0;
	init_header_base(&e->h, SONDE_EV_DATA, pid_tgid);
	if (!conn_info(tgid, fd, f, &e->h)) {
		count(SONDE_CNT_NOT_SOCKET);
		return 0;
	}
	e->h.ret = ret;
	e->h.fd = fd;
	e->h.direction = dir;
	e->h.syscall = sys;

	__u64 want = prefix_len(ret);
	int err = 0;
	if (buf == SONDE_BUF_PLAIN) {
		if (want && bpf_probe_read_user(e->payload, want, (void *)regs.a2))
			err = -1;
		else
			e->h.payload_len = want;
	} else if (buf == SONDE_BUF_IOV) {
		err = copy_iov(e, (const struct sonde_iovec *)regs.a2, regs.a3, want);
	} else if (buf == SONDE_BUF_MSG) {
		struct sonde_user_msghdr msg;
		err = bpf_probe_read_user(&msg, sizeof(msg), (void *)regs.a2);
		if (!err)
			err = copy_iov(e, msg.msg_iov, msg.msg_iovlen, want);
	}
	if (err) {
		/* The byte count is still worth reporting: a gap in the stream beats silence. */
		count(SONDE_CNT_READ_ERRORS);
		e->h.payload_len = 0;
	}

	__u64 len = e->h.payload_len;
	barrier_var(len);
	if (len > SONDE_MAX_PAYLOAD)
		len = SONDE_MAX_PAYLOAD;
	if (bpf_ringbuf_output(&sonde_events, e, sizeof(e->h) + len, BPF_RB_NO_WAKEUP))
		count(SONDE_CNT_LOST);
	else
		count(SONDE_CNT_EVENTS);
	return 0;
}

#define DATA_PROG(name, sys, dir, buf)                                                 \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                     \
	int sonde_exit_##name(struct sonde_sys_exit_ctx *ctx)                          \
	{                                                                              \
		return handle_data(ctx, sys, dir, buf);                                \
	}

DATA_PROG(read, SONDE_SYS_READ, SONDE_DIR_RECV, SONDE_BUF_PLAIN)
DATA_PROG(write, SONDE_SYS_WRITE, SONDE_DIR_SEND, SONDE_BUF_PLAIN)
DATA_PROG(readv, SONDE_SYS_READV, SONDE_DIR_RECV, SONDE_BUF_IOV)
DATA_PROG(writev, SONDE_SYS_WRITEV, SONDE_DIR_SEND, SONDE_BUF_IOV)
DATA_PROG(sendto, SONDE_SYS_SENDTO, SONDE_DIR_SEND, SONDE_BUF_PLAIN)
DATA_PROG(recvfrom, SONDE_SYS_RECVFROM, SONDE_DIR_RECV, SONDE_BUF_PLAIN)
DATA_PROG(sendmsg, SONDE_SYS_SENDMSG, SONDE_DIR_SEND, SONDE_BUF_MSG)
DATA_PROG(recvmsg, SONDE_SYS_RECVMSG, SONDE_DIR_RECV, SONDE_BUF_MSG)
DATA_PROG(sendfile64, SONDE_SYS_SENDFILE, SONDE_DIR_SEND, SONDE_BUF_NONE)

/* accept/accept4 (fd = ret) and connect (fd = arg 1): remember the role, report the tuple. */
static __always_inline int handle_conn(struct sonde_sys_exit_ctx *ctx, __u8 sys)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!selected(tgid))
		return 0;
	count(SONDE_CNT_FILTERED_IN);

	long ret = ctx->ret;
	struct task_struct *task = bpf_get_current_task_btf();
	int fd;
	__u8 kind, role;
	if (sys == SONDE_SYS_ACCEPT) {
		if (ret < 0)
			return 0;
		fd = (int)ret;
		kind = SONDE_EV_ACCEPT;
		role = SONDE_ROLE_SERVER;
	} else {
		if (ret != 0 && ret != -EINPROGRESS)
			return 0;
		struct sonde_args regs;
		if (syscall_args(task, ctx->syscall_nr, &regs))
			return 0;
		fd = (int)regs.a1;
		kind = SONDE_EV_CONNECT;
		role = SONDE_ROLE_CLIENT;
	}

	struct file *f = file_of_fd(task, fd);
	struct sock *sk = sock_of_file(f);
	__u16 family = sk ? tcp_family(sk) : 0;
	if (!family) {
		count(SONDE_CNT_NOT_SOCKET);
		return 0;
	}
	struct sonde_conn_key key = {.tgid = tgid, .fd = fd};
	struct sonde_conn c = {.file = (__u64)f, .sock_id = (__u64)sk, .role = role};
	c.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(c.comm, sizeof(c.comm));
	read_tuple(sk, family, &c.tuple);
	bpf_map_update_elem(&sonde_conns, &key, &c, BPF_ANY);
	remember_owner((__u64)sk, tgid, fd, role);

	struct sonde_event_header *h = bpf_ringbuf_reserve(&sonde_events, sizeof(*h), 0);
	if (!h) {
		count(SONDE_CNT_LOST);
		return 0;
	}
	init_header(h, kind, pid_tgid);
	h->sock_id = (__u64)sk;
	h->ret = ret;
	h->fd = fd;
	h->role = role;
	h->syscall = sys;
	__builtin_memcpy(&h->tuple, &c.tuple, sizeof(h->tuple));
	bpf_ringbuf_submit(h, BPF_RB_NO_WAKEUP);
	count(SONDE_CNT_EVENTS);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sonde_exit_accept(struct sonde_sys_exit_ctx *ctx)
{
	return handle_conn(ctx, SONDE_SYS_ACCEPT);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sonde_exit_accept4(struct sonde_sys_exit_ctx *ctx)
{
	return handle_conn(ctx, SONDE_SYS_ACCEPT);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sonde_exit_connect(struct sonde_sys_exit_ctx *ctx)
{
	return handle_conn(ctx, SONDE_SYS_CONNECT);
}

/* At exit, like everything else: a sys_enter program would put every syscall of every process
 * on the machine through the enter-side tracepoint path. Linux releases the fd even when close
 * fails with EINTR. Another thread may already have reused the fd number by now: if the cached
 * entry describes the file that holds the fd now, it is the new file's (written by its accept
 * or first data event) and is left alone; the old connection's close is then missed, and
 * userspace expires it as idle. */
SEC("tracepoint/syscalls/sys_exit_close")
int sonde_exit_close(struct sonde_sys_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!selected(tgid))
		return 0;
	count(SONDE_CNT_FILTERED_IN);
	if (ctx->ret != 0 && ctx->ret != -EINTR)
		return 0;

	struct task_struct *task = bpf_get_current_task_btf();
	struct sonde_args regs;
	if (syscall_args(task, ctx->syscall_nr, &regs))
		return 0;
	struct sonde_conn_key key = {.tgid = tgid, .fd = (int)regs.a1};
	struct sonde_conn *c = bpf_map_lookup_elem(&sonde_conns, &key);
	if (!c)
		return 0;
	struct file *now = file_of_fd(task, key.fd);
	if (now && (__u64)now == c->file)
		return 0;
	__u64 sock_id = c->sock_id;
	__u8 role = c->role;
	bpf_map_delete_elem(&sonde_conns, &key);
	if (role == SONDE_CONN_NOT_TCP)
		return 0;
	bpf_map_delete_elem(&sonde_socks, &sock_id);

	struct sonde_event_header *h = bpf_ringbuf_reserve(&sonde_events, sizeof(*h), 0);
	if (!h) {
		count(SONDE_CNT_LOST);
		return 0;
	}
	init_header(h, SONDE_EV_CLOSE, pid_tgid);
	h->sock_id = sock_id;
	h->fd = key.fd;
	h->role = role;
	h->syscall = SONDE_SYS_CLOSE;
	bpf_ringbuf_submit(h, BPF_RB_NO_WAKEUP);
	count(SONDE_CNT_EVENTS);
	return 0;
}

/* Connection life-cycle: a traced TCP socket that reaches TCP_CLOSE without a close() we saw
 * (reset by the peer, aborted, closed by the kernel when its process died) is reported closed
 * here, once: whichever of this and sys_exit_close comes first removes the socket from both
 * caches. Fires for every socket state change on the machine; untraced sockets cost one hash
 * lookup. */
#define SONDE_TCP_CLOSE 7
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(sonde_sock_state, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != SONDE_TCP_CLOSE)
		return 0;
	__u64 id = (__u64)sk;
	struct sonde_sk_owner *o = bpf_map_lookup_elem(&sonde_socks, &id);
	if (!o)
		return 0;
	struct sonde_sk_owner owner = *o;
	bpf_map_delete_elem(&sonde_socks, &id);
	struct sonde_conn_key key = {.tgid = owner.tgid, .fd = owner.fd};
	struct sonde_conn *c = bpf_map_lookup_elem(&sonde_conns, &key);
	if (c && c->sock_id == id)
		bpf_map_delete_elem(&sonde_conns, &key);

	struct sonde_event_header *h = bpf_ringbuf_reserve(&sonde_events, sizeof(*h), 0);
	if (!h) {
		count(SONDE_CNT_LOST);
		return 0;
	}
	init_header_base(h, SONDE_EV_CLOSE, (__u64)owner.tgid << 32);
	h->cgroup_id = 0;
	__builtin_memset(h->comm, 0, sizeof(h->comm));
	h->sock_id = id;
	h->fd = owner.fd;
	h->role = owner.role;
	h->syscall = SONDE_SYS_NONE;
	bpf_ringbuf_submit(h, BPF_RB_NO_WAKEUP);
	count(SONDE_CNT_EVENTS);
	return 0;
}

/* Discovery hints: not filtered by selection (their point is to find processes to select). */

SEC("tracepoint/syscalls/sys_exit_listen")
int sonde_exit_listen(struct sonde_sys_exit_ctx *ctx)
{
	if (ctx->ret != 0)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((pid_tgid >> 32) == self_tgid)
		return 0;
	struct sonde_event_header h;
	init_header(&h, SONDE_EV_LISTEN, pid_tgid);
	struct task_struct *task = bpf_get_current_task_btf();
	struct sonde_args regs;
	if (!syscall_args(task, ctx->syscall_nr, &regs)) {
		int fd = (int)regs.a1;
		struct sock *sk = sock_of_fd(task, fd);
		__u16 family = sk ? tcp_family(sk) : 0;
		h.fd = fd;
		if (family) {
			h.sock_id = (__u64)sk;
			read_tuple(sk, family, &h.tuple);
		}
	}
	submit_header(&h);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int sonde_process_exec(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((pid_tgid >> 32) == self_tgid)
		return 0;
	struct sonde_event_header h;
	init_header(&h, SONDE_EV_PROC_EXEC, pid_tgid);
	submit_header(&h);
	return 0;
}

/* A selected process forked: the child is selected at once, before its first syscall, so a
 * pre-forking server's workers (nginx, gunicorn...) are traced from their first request rather
 * than from discovery's next look. Userspace gets a hint to describe the child, and unselects
 * it if the rules say so (e.g. it exec'd something else). Threads are not processes: skipped.
 * Only the pid bitmap is consulted: a cgroup-selected parent's child is in the same cgroup. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(sonde_process_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid;
	__u32 ctgid = child->tgid;
	if (ctgid == ptgid || ptgid == self_tgid)
		return 0;
	if (!pid_bit(&sonde_pids, ptgid))
		return 0;
	__u64 *cbits = pid_word(&sonde_pids, ctgid);
	if (!cbits)
		return 0;
	*cbits |= 1ULL << (ctgid % 64);
	struct sonde_event_header h;
	init_header(&h, SONDE_EV_PROC_FORK, bpf_get_current_pid_tgid());
	h.pid = ctgid;
	h.tid = child->pid;
	h.ret = ptgid;
	submit_header(&h);
	return 0;
}

/* Fires for every exiting thread; only the last one of a process (signal->live dropped to 0
 * before the tracepoint) means the process is gone. Its selection bit is cleared here, so a
 * later process reusing the pid is never traced by mistake, whatever userspace has seen. */
SEC("tracepoint/sched/sched_process_exit")
int sonde_process_exit(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	clear_pid_bit(&sonde_pids, tgid);
	clear_pid_bit(&sonde_deny, tgid);
	struct sonde_event_header h;
	init_header(&h, SONDE_EV_PROC_EXIT, pid_tgid);
	submit_header(&h);
	return 0;
}
