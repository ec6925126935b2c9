// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sonde's fallback capture for kernels without the socket layer's BTF tracepoints
 * (sock_send_length / sock_recv_length, Linux < 6.3): the same events as sonde.bpf.c, from
 * syscall exit tracepoints (read/write, readv/writev, sendto/recvfrom, sendmsg/recvmsg,
 * sendfile; accept/accept4, connect, close, listen) plus sock:inet_sock_set_state for
 * connections that end without a close(). The loader picks this object only when the other
 * cannot load (or when asked to).
 *
 * Exit-only: an enter/exit pair costs every process two program runs per syscall; at exit the
 * return value is in the tracepoint context and the arguments are still in the task's saved
 * user registers, so one run is enough. Every program starts with the selection check and
 * returns at once otherwise, but attaching any syscall tracepoint puts every syscall of every
 * task on the kernel's slow syscall path: measured here (examples/syscall_cost, 6.18)
 * +160-176 ns per hooked syscall and +55-76 ns on any other syscall of an unselected process.
 *
 * A connection's tuple, TCP check, comm and cgroup id are cached per (tgid, fd) and checked
 * against the struct file at the fd; connections are roled by the accept/connect they came
 * from, and closed at close() (or TCP_CLOSE without one).
 */
#include "sonde_common.h"

#define SONDE_MAX_CONNS 65536

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
} sonde_fd_conns SEC(".maps");

/* The TCP sockets in sonde_fd_conns, by kernel address, for the life-cycle tracepoint: it often
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

/* Tracepoint contexts (tracefs format files; stable layout). */
struct sonde_sys_exit_ctx {
	__u64 common;
	int syscall_nr;
	int _pad;
	long ret;
};

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
	struct sonde_conn *c = bpf_map_lookup_elem(&sonde_fd_conns, &key);
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
	bpf_map_update_elem(&sonde_fd_conns, &key, &nc, BPF_ANY);
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

static __always_inline int handle_data(struct sonde_sys_exit_ctx *ctx, __u8 sys, __u8 dir,
				       enum sonde_buf_kind buf)
{
	__u64 pid_tgid;
	if (!selected_now(&pid_tgid))
		return 0;
	__u32 tgid = pid_tgid >> 32;

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

	struct sonde_scratch *e = data_scratch(pid_tgid);
	if (!e)
		return 0;
	if (!conn_info(tgid, fd, f, &e->h)) {
		count(SONDE_CNT_NOT_SOCKET);
		return 0;
	}
	e->h.ret = ret;
	e->h.fd = fd;
	e->h.direction = dir;
	e->h.syscall = sys;

	struct sonde_call call = {.buf = regs.a2, .len = regs.a3, .fd = fd, .sys = sys, .kind = buf};
	submit_data(e, &call, ret);
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
	__u64 pid_tgid;
	if (!selected_now(&pid_tgid))
		return 0;
	__u32 tgid = pid_tgid >> 32;

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
	bpf_map_update_elem(&sonde_fd_conns, &key, &c, BPF_ANY);
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
	__u64 pid_tgid;
	if (!selected_now(&pid_tgid))
		return 0;
	__u32 tgid = pid_tgid >> 32;
	if (ctx->ret != 0 && ctx->ret != -EINTR)
		return 0;

	struct task_struct *task = bpf_get_current_task_btf();
	struct sonde_args regs;
	if (syscall_args(task, ctx->syscall_nr, &regs))
		return 0;
	struct sonde_conn_key key = {.tgid = tgid, .fd = (int)regs.a1};
	struct sonde_conn *c = bpf_map_lookup_elem(&sonde_fd_conns, &key);
	if (!c)
		return 0;
	struct file *now = file_of_fd(task, key.fd);
	if (now && (__u64)now == c->file)
		return 0;
	__u64 sock_id = c->sock_id;
	__u8 role = c->role;
	bpf_map_delete_elem(&sonde_fd_conns, &key);
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
	struct sonde_conn *c = bpf_map_lookup_elem(&sonde_fd_conns, &key);
	if (c && c->sock_id == id)
		bpf_map_delete_elem(&sonde_fd_conns, &key);

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

