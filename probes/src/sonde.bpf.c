// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sonde's kernel programs: TCP payload capture for selected processes from the socket layer's
 * BTF tracepoints sock_send_length / sock_recv_length, connection life-cycle from
 * sock:inet_sock_set_state, and sched exec/exit/fork (discovery hints, selection of a selected
 * process's children, selection cleanup). No syscall tracepoint at all.
 *
 * Why not syscall tracepoints (this design's first version used read/write/... exit
 * tracepoints): attaching any syscall tracepoint puts every syscall of every task on the
 * kernel's slow syscall path. Measured here (examples/syscall_cost, 6.18) for a process that
 * is not selected: +160-176 ns per hooked syscall and +55-76 ns on *every other* syscall. The
 * socket tracepoints fire only where socket data moves: an unselected process pays nothing on
 * other syscalls and one early return per socket call (~+95 ns measured with a throwaway probe).
 * The syscall's arguments (where the bytes are in the process) are still at hand in the task's
 * saved user registers; the tracepoint gives the socket and the byte count directly, so there
 * is no fd -> file -> socket walk either.
 *
 * Every data program starts with the selection check (tgid in sonde_pids, or cgroup id in
 * sonde_cgroups and tgid not in sonde_deny) and returns at once otherwise. The discovery hints
 * (exec, exit, listen) are the exception: they are rare and userspace needs them for processes
 * it has not selected yet.
 *
 * Events are submitted with BPF_RB_NO_WAKEUP: userspace drains on a timer, because a wake-up
 * per event cost more than everything else together on two shared cores.
 *
 * Needs a kernel with BTF and >= 6.3 (the sock_send_length/sock_recv_length tracepoints;
 * bpf_task_pt_regs 5.15, ring buffer 5.8). x86-64 syscall numbers.
 */
#include "sonde_common.h"

/* Every TCP connection set up while the programs are loaded, by the kernel address of its
 * struct sock: the life-cycle program adds it when it starts (SYN_SENT: client side, SYN_RECV:
 * server side; for any process: the server side is set up in softirq context, where nothing says
 * whose socket it is) and removes it when it reaches TCP_CLOSE. LRU: bounded whatever the
 * machine does; a connection whose end was missed is evicted, never blocks a new one. */
struct sonde_setup {
	__u64 start_ts; /* boot ns when it was set up */
	__u8 role;      /* enum sonde_role */
	__u8 _pad[7];
};

#define SONDE_MAX_SETUPS 131072

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SONDE_MAX_SETUPS);
	__type(key, __u64);
	__type(value, struct sonde_setup);
} sonde_setups SEC(".maps");

/* A connection a selected process moved data on, in the socket's own storage (freed with the
 * socket; one pointer load to find, where a hash lookup cost ~40 ns more per event): what the
 * first data event read from the socket and the process, copied by every later event. */
struct sonde_conn {
	__u64 start_ts;           /* boot ns when it was set up; 0: before the programs were loaded */
	__u64 cgroup_id;          /* of the process, when it was first seen using it */
	struct sonde_tuple tuple; /* a connected TCP socket's tuple does not change: read once */
	__u32 tgid;               /* the selected process seen using it */
	__s32 fd;                 /* its descriptor there, when the syscall said (else -1) */
	__u8 role;                /* enum sonde_role */
	__u8 _pad[7];
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sonde_conn);
} sonde_conns SEC(".maps");

/* AF_INET or AF_INET6 for a TCP socket, 0 otherwise. sk is a typed tracepoint argument: plain
 * loads, no helper call. */
static __always_inline __u16 tcp_family(struct sock *sk)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 fam = sk->__sk_common.skc_family;
	return fam == AF_INET || fam == AF_INET6 ? fam : 0;
}

/* The syscall that moved the bytes, from the task's saved user registers: the socket layer's
 * tracepoints say how many bytes and on which socket, the syscall's arguments say where they
 * are in the process's memory. */
static __always_inline void current_call(struct task_struct *task, struct sonde_call *c)
{
	c->fd = -1;
	c->sys = SONDE_SYS_NONE;
	c->kind = SONDE_BUF_NONE;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs)
		return;
	long nr = (long)regs->orig_ax;
	switch (nr) {
	case NR_READ:
		c->sys = SONDE_SYS_READ;
		c->kind = SONDE_BUF_PLAIN;
		break;
	case NR_WRITE:
		c->sys = SONDE_SYS_WRITE;
		c->kind = SONDE_BUF_PLAIN;
		break;
	case NR_SENDTO:
		c->sys = SONDE_SYS_SENDTO;
		c->kind = SONDE_BUF_PLAIN;
		break;
	case NR_RECVFROM:
		c->sys = SONDE_SYS_RECVFROM;
		c->kind = SONDE_BUF_PLAIN;
		break;
	case NR_READV:
		c->sys = SONDE_SYS_READV;
		c->kind = SONDE_BUF_IOV;
		break;
	case NR_WRITEV:
		c->sys = SONDE_SYS_WRITEV;
		c->kind = SONDE_BUF_IOV;
		break;
	case NR_SENDMSG:
		c->sys = SONDE_SYS_SENDMSG;
		c->kind = SONDE_BUF_MSG;
		break;
	case NR_RECVMSG:
		c->sys = SONDE_SYS_RECVMSG;
		c->kind = SONDE_BUF_MSG;
		break;
	case NR_SENDFILE:
		c->sys = SONDE_SYS_SENDFILE;
		break;
	default:
		return;
	}
	c->fd = (int)regs->di;
	c->buf = regs->si;
	c->len = regs->dx;
}

/* True when no byte had moved on the connection before this call, in either direction: the
 * process is seen from the connection's first message, so userspace can trust the pairing
 * from the start. The counters are the socket's own (see struct tcp_sock). */
static __always_inline bool nothing_moved_before(struct sock *sk, long ret, __u8 dir)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return false;
	__u64 read = tp->bytes_received - (__u32)(tp->rcv_nxt - tp->copied_seq);
	__u64 written = (__u64)(__u32)(tp->write_seq - tp->snd_una) + tp->bytes_acked;
	if (dir == SONDE_DIR_RECV)
		read -= ret;
	else
		written -= ret;
	return read == 0 && written <= 1;
}

/* The first time a selected process moves data on a connection: checks it is a process's
 * socket (not one the kernel uses on its own, e.g. NFS or a tunnel, whose calls can run in
 * any process's syscall), reads tuple, comm and cgroup once, and caches them. When the
 * connection was set up while the programs were loaded and nothing moved on it before, a
 * Connection event (ACCEPT/CONNECT) with the setup time goes first, so userspace knows it sees
 * the connection from its start. `other` is the connection as another selected process left
 * it (a socket shared across fork), if any. Fills nc; returns false if the socket is not to be
 * traced. */
static __always_inline bool first_sight(struct sock *sk, __u16 family, __u32 tgid,
					__u64 pid_tgid, struct sonde_call *call, long ret,
					__u8 dir, struct sonde_conn *other, struct sonde_conn *nc)
{
	struct socket *so = sk->sk_socket;
	if (!so || !so->file) {
		count(SONDE_CNT_NOT_SOCKET);
		return false;
	}
	__u64 id = (__u64)sk;
	__builtin_memset(nc, 0, sizeof(*nc));
	nc->tgid = tgid;
	nc->fd = call->fd;
	nc->role = SONDE_ROLE_UNKNOWN;
	bool fresh = false;
	struct sonde_setup *setup = bpf_map_lookup_elem(&sonde_setups, &id);
	if (other) {
		nc->start_ts = other->start_ts;
		nc->role = other->role;
	} else if (setup) {
		nc->start_ts = setup->start_ts;
		nc->role = setup->role;
		fresh = nothing_moved_before(sk, ret, dir);
	}
	nc->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(nc->comm, sizeof(nc->comm));
	read_tuple(sk, family, &nc->tuple);
	struct sonde_conn *stored =
		bpf_sk_storage_get(&sonde_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (stored)
		__builtin_memcpy(stored, nc, sizeof(*nc));

	if (fresh) {
		struct sonde_event_header *c = bpf_ringbuf_reserve(&sonde_events, sizeof(*c), 0);
		if (c) {
			init_header_base(c, nc->role == SONDE_ROLE_SERVER ? SONDE_EV_ACCEPT
									: SONDE_EV_CONNECT,
					 pid_tgid);
			c->ts_boot_ns = nc->start_ts;
			c->cgroup_id = nc->cgroup_id;
			__builtin_memcpy(c->comm, nc->comm, sizeof(c->comm));
			c->sock_id = id;
			c->fd = nc->fd;
			c->role = nc->role;
			c->syscall = nc->role == SONDE_ROLE_SERVER ? SONDE_SYS_ACCEPT : SONDE_SYS_CONNECT;
			__builtin_memcpy(&c->tuple, &nc->tuple, sizeof(c->tuple));
			bpf_ringbuf_submit(c, BPF_RB_NO_WAKEUP);
			count(SONDE_CNT_EVENTS);
		} else {
			count(SONDE_CNT_LOST);
		}
	}
	return true;
}

/* Bytes moved on a socket by the socket layer (sock_sendmsg / sock_recvmsg): write, writev,
 * send*, sendfile and read, readv, recv* on sockets all come through here, and nothing else
 * does, so a process that is not selected pays for its socket calls only, and other syscalls
 * run untouched. */
static __always_inline int on_msg(struct sock *sk, int ret, int flags, __u8 dir)
{
	if (ret <= 0)
		return 0;
	__u64 pid_tgid;
	if (!selected_now(&pid_tgid))
		return 0;
	__u32 tgid = pid_tgid >> 32;
	__u16 family = tcp_family(sk);
	if (!family) {
		count(SONDE_CNT_NOT_SOCKET);
		return 0;
	}
	/* Peeked bytes will be read again; reporting them twice would corrupt the stream. Error
	 * queue reads (timestamps, zero-copy completions) are not stream data. */
	if (flags & (MSG_PEEK | MSG_ERRQUEUE))
		return 0;

	struct sonde_scratch *e = data_scratch(pid_tgid);
	if (!e)
		return 0;
	struct sonde_call call;
	current_call(bpf_get_current_task_btf(), &call);

	__u64 id = (__u64)sk;
	struct sonde_conn *c = bpf_sk_storage_get(&sonde_conns, sk, 0, 0);
	struct sonde_conn seen;
	if (!c || c->tgid != tgid) {
		if (!first_sight(sk, family, tgid, pid_tgid, &call, ret, dir, c, &seen))
			return 0;
		c = &seen;
	}
	e->h.sock_id = id;
	e->h.role = c->role;
	e->h.fd = c->fd;
	e->h.cgroup_id = c->cgroup_id;
	__builtin_memcpy(e->h.comm, c->comm, sizeof(e->h.comm));
	__builtin_memcpy(&e->h.tuple, &c->tuple, sizeof(e->h.tuple));
	e->h.ret = ret;
	e->h.direction = dir;
	e->h.syscall = call.sys;
	submit_data(e, &call, ret);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sonde_sock_send, struct sock *sk, int ret, int flags)
{
	return on_msg(sk, ret, flags, SONDE_DIR_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sonde_sock_recv, struct sock *sk, int ret, int flags)
{
	return on_msg(sk, ret, flags, SONDE_DIR_RECV);
}

/* Connection life-cycle, for every TCP socket of the machine (a state change is rare next to
 * the data it carries): a connection is remembered with its role when it is set up, and
 * forgotten when it reaches TCP_CLOSE, which every TCP socket does exactly once per connection
 * whatever ended it (close and the FIN exchange, a reset, an abort, its process dying). A
 * traced connection's end is reported then. A socket entering TCP_LISTEN is a discovery hint. */

static __always_inline void listen_hint(struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((pid_tgid >> 32) == self_tgid)
		return;
	struct sonde_event_header h;
	init_header(&h, SONDE_EV_LISTEN, pid_tgid);
	h.sock_id = (__u64)sk;
	__u16 family = tcp_family(sk);
	if (family)
		read_tuple(sk, family, &h.tuple);
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (regs && regs->orig_ax == NR_LISTEN)
		h.fd = (int)regs->di;
	submit_header(&h);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(sonde_sock_state, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u64 id = (__u64)sk;
	if (newstate == SONDE_TCP_SYN_SENT || newstate == SONDE_TCP_SYN_RECV) {
		struct sonde_setup setup = {
			.start_ts = bpf_ktime_get_boot_ns(),
			.role = newstate == SONDE_TCP_SYN_SENT ? SONDE_ROLE_CLIENT : SONDE_ROLE_SERVER,
		};
		bpf_map_update_elem(&sonde_setups, &id, &setup, BPF_ANY);
		return 0;
	}
	if (newstate == SONDE_TCP_LISTEN) {
		listen_hint(sk);
		return 0;
	}
	if (newstate != SONDE_TCP_CLOSE)
		return 0;
	bpf_map_delete_elem(&sonde_setups, &id);
	struct sonde_conn *c = bpf_sk_storage_get(&sonde_conns, sk, 0, 0);
	if (!c)
		return 0;
	__u32 tgid = c->tgid;
	int fd = c->fd;
	__u8 role = c->role;
	/* The socket may be connected again (connect after a disconnect): start afresh then. */
	bpf_sk_storage_delete(&sonde_conns, sk);
	if (!tgid)
		return 0;

	struct sonde_event_header *h = bpf_ringbuf_reserve(&sonde_events, sizeof(*h), 0);
	if (!h) {
		count(SONDE_CNT_LOST);
		return 0;
	}
	/* Often softirq context: the current task says nothing about the socket's owner. */
	init_header_base(h, SONDE_EV_CLOSE, (__u64)tgid << 32);
	h->cgroup_id = 0;
	__builtin_memset(h->comm, 0, sizeof(h->comm));
	h->sock_id = id;
	h->fd = fd;
	h->role = role;
	h->syscall = SONDE_SYS_NONE;
	bpf_ringbuf_submit(h, BPF_RB_NO_WAKEUP);
	count(SONDE_CNT_EVENTS);
	return 0;
}

