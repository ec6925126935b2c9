/* What both capture objects share (included once by sonde.bpf.c and sonde_syscalls.bpf.c):
 * the maps userspace reads and fills, the selection check, event headers, the payload copy,
 * and the process life-cycle programs (exec/exit hints, fork selection). */
#ifndef SONDE_COMMON_H
#define SONDE_COMMON_H

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

/* The selection check every capture program starts with; counts the runs that pass it. */
static __always_inline bool selected_now(__u64 *pid_tgid)
{
	*pid_tgid = bpf_get_current_pid_tgid();
	if (!selected(*pid_tgid >> 32))
		return false;
	count(SONDE_CNT_FILTERED_IN);
	return true;
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

/* TCP states (include/net/tcp_states.h), as sock:inet_sock_set_state reports them. */
#define SONDE_TCP_SYN_SENT 2
#define SONDE_TCP_SYN_RECV 3
#define SONDE_TCP_CLOSE 7
#define SONDE_TCP_LISTEN 10

/* x86-64 syscall numbers, and where each data syscall keeps its bytes. */
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_LISTEN 50

enum sonde_buf_kind {
	SONDE_BUF_PLAIN, /* arg 2 is the buffer */
	SONDE_BUF_IOV,   /* arg 2 is an iovec array, arg 3 its length */
	SONDE_BUF_MSG,   /* arg 2 is a struct user_msghdr */
	SONDE_BUF_NONE,  /* bytes only: sendfile, or a path we cannot read (io_uring, sendmmsg...) */
};

struct sonde_call {
	unsigned long buf;  /* arg 2 */
	unsigned long len;  /* arg 3 */
	int fd;             /* arg 1, or -1 */
	__u8 sys;           /* enum sonde_syscall */
	__u8 kind;          /* enum sonde_buf_kind */
};

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

static __always_inline int copy_payload(struct sonde_scratch *e, struct sonde_call *call,
					long ret)
{
	__u64 want = prefix_len(ret);
	if (call->kind == SONDE_BUF_PLAIN) {
		if (want && bpf_probe_read_user(e->payload, want, (void *)call->buf))
			return -1;
		e->h.payload_len = want;
	} else if (call->kind == SONDE_BUF_IOV) {
		return copy_iov(e, (const struct sonde_iovec *)call->buf, call->len, want);
	} else if (call->kind == SONDE_BUF_MSG) {
		struct sonde_user_msghdr msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)call->buf))
			return -1;
		return copy_iov(e, msg.msg_iov, msg.msg_iovlen, want);
	}
	return 0;
}

/* This CPU's scratch, its header started as a data event of the current task. */
static __always_inline struct sonde_scratch *data_scratch(__u64 pid_tgid)
{
	__u32 zero = 0;
	struct sonde_scratch *e = bpf_map_lookup_elem(&sonde_scratch, &zero);
	if (e)
		init_header_base(&e->h, SONDE_EV_DATA, pid_tgid);
	return e;
}

/* Copies the payload prefix of the call into e (a failed read still reports the byte count:
 * a gap in the stream beats silence) and sends the data event with its real length. */
static __always_inline void submit_data(struct sonde_scratch *e, struct sonde_call *call, long ret)
{
	if (copy_payload(e, call, ret)) {
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
}

/* Process life-cycle. The exec and exit hints are not filtered by selection (their point is
 * to find processes to select). */

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

#endif
