/* The few kernel types Sonde's programs read, declared by hand instead of a generated vmlinux.h.
 *
 * Every struct is marked preserve_access_index: clang records each field access as a CO-RE
 * relocation (type and field *name*), and the loader rewrites the offset from the running
 * kernel's BTF. So only the fields used need to be declared, in any order, and nested anonymous
 * unions/structs of the real kernel layout may be flattened here (the relocation searches
 * anonymous members by name). The object therefore builds without /sys/kernel/btf or bpftool and
 * runs on any kernel with BTF that has these field names.
 *
 * Structs that are user-space ABI (iovec, user_msghdr) are fixed layouts and are not relocated.
 */
#ifndef SONDE_KERNEL_H
#define SONDE_KERNEL_H

/* sonde_event.h and libbpf's headers check this to skip <linux/types.h>. */
#define __VMLINUX_H__

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* UAPI constants (include/uapi/linux/bpf.h): stable numbers. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#define BPF_F_NO_PREALLOC 1
#define BPF_SK_STORAGE_GET_F_CREATE 1

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000
#define EINPROGRESS 115
#define EINTR 4

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads not yet exited; 0 once the whole process is exiting */
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct inode {
	unsigned short i_mode;
};

struct file {
	void *private_data; /* struct socket * for sockets */
	struct inode *f_inode;
};

struct in6_addr {
	__u8 s6_addr[16];
};

/* Flattened: the kernel nests these in anonymous unions/structs. */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct socket;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	__u16 sk_type;
	struct socket *sk_socket;
};

struct socket {
	struct file *file; /* NULL for a kernel socket (no descriptor) */
	struct sock *sk;
};

/* Only reached through bpf_skc_to_tcp_sock(). Sequence numbers and RFC 4898 counters: bytes
 * read by the process so far = bytes_received - (rcv_nxt - copied_seq); bytes written so far =
 * (write_seq - snd_una) + bytes_acked (+1 on the active side, whose SYN counts as acked). */
struct tcp_sock {
	__u64 bytes_received;
	__u64 bytes_acked;
	__u32 rcv_nxt;
	__u32 copied_seq;
	__u32 write_seq;
	__u32 snd_una;
};

/* The saved user registers (x86-64 names; the syscall ABI passes arguments 1..4 in di, si, dx,
 * r10, and orig_ax keeps the syscall number). Reached through bpf_task_pt_regs(). */
struct pt_regs {
	unsigned long r10;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
};

struct task_struct {
	void *stack;
	struct files_struct *files;
	struct signal_struct *signal;
	int pid;  /* the thread id */
	int tgid; /* the process id */
};

#pragma clang attribute pop

struct sonde_iovec {
	void *iov_base;
	unsigned long iov_len;
};

struct sonde_user_msghdr {
	void *msg_name;
	int msg_namelen;
	struct sonde_iovec *msg_iov;
	unsigned long msg_iovlen;
	void *msg_control;
	unsigned long msg_controllen;
	unsigned int msg_flags;
};

#endif
