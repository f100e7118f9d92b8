/*
 * pause: the first member of every podhost pod sandbox.
 *
 * As the pod's pause it blocks in pause(2), exits 0 on SIGINT/SIGTERM and reaps every child on SIGCHLD, so
 * that when the pod shares one PID namespace (pause is PID 1) no orphaned zombie survives.
 *
 * podhost also uses it as its own launcher, so that founding a sandbox costs one tiny exec and no runc:
 * when PODHOST_PAUSE_NS is set, pause first joins the cgroups in PODHOST_PAUSE_CGROUPS (':'-separated
 * cgroup.procs files), unshares the namespaces named in PODHOST_PAUSE_NS ("net,ipc,uts[,pid]"), sets the
 * hostname from PODHOST_PAUSE_HOSTNAME, writes the namespaced sysctls in PODHOST_PAUSE_SYSCTLS
 * ("/proc/sys/path=value" lines separated by ';'), then forks. The child (PID 1 of the new PID namespace
 * when "pid" was asked for) drops to uid/gid 65535 with no capabilities and no_new_privs, puts /dev/null
 * on its stdin/stdout/stderr and becomes the pause. argv stays "/pause", so `ps ax` in a shared-PID pod
 * shows /pause as PID 1.
 *
 * The pod's user namespace (PODHOST_PAUSE_USERNS=1) comes first, so that the namespaces unshared after it
 * are owned by it. Only a process of the parent namespace with CAP_SETUID may write a multi-range
 * uid_map, so the daemon writes the maps: the launcher unshares CLONE_NEWUSER, prints "userns\n" and
 * reads one byte from stdin, which the daemon writes once /proc/<launcher>/{uid,gid}_map are set (EOF
 * instead means "give up"). The launcher then becomes the namespace's root and carries on. In a user
 * namespace the pause drops to uid/gid 65535 only when that id is mapped; else it stays the mapped root,
 * with no_new_privs, holding capabilities only over the pod's own namespaces.
 *
 * The report. Every step that can fail happens before the child says it is ready; the child speaks only
 * through the `ready` pipe ("k", or its error), never through the launcher's stdout/stderr, which it
 * has replaced with /dev/null by then. So the launcher's caller sees exactly one of: the launcher prints
 * the pause's PID and exits 0 (and no process but the pause holds anything of the caller's), or it prints
 * "pause: <step>: errno N" on stderr, prints no PID and exits 1 after the failed child has exited.
 *
 * Built freestanding (no libc, raw syscalls) on x86_64 and aarch64, where a running pause costs ~12 KiB;
 * elsewhere the same file builds against libc with -DPAUSE_LIBC.
 */

#define PAUSE_VERSION "podhost-pause 1.0"

#define CLONE_NEWUSER 0x10000000
#define CLONE_NEWUTS 0x04000000
#define CLONE_NEWIPC 0x08000000
#define CLONE_NEWPID 0x20000000
#define CLONE_NEWNET 0x40000000
#define SIGINT 2
#define SIGTERM 15
#define SIGCHLD 17
#define WNOHANG 1
#define O_WRONLY 1
#define O_RDWR 2
#define EINVAL 22
#define PAUSE_UID 65535

typedef unsigned long ulong;

#ifdef PAUSE_LIBC
/* Portable build: the same logic over libc (a static glibc pause costs ~700 KiB RSS, still fine). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
static long R(long result) { return result < 0 ? -(long)errno : result; } /* -errno, like a raw syscall */
static long sys_write(int fd, const void *b, ulong n) { return R(write(fd, b, n)); }
static long sys_open(const char *p, int f) { return R(open(p, f)); }
static long sys_close(int fd) { return R(close(fd)); }
static long sys_read(int fd, void *b, ulong n) { return R(read(fd, b, n)); }
static long sys_pipe(int fds[2]) { return R(pipe2(fds, O_CLOEXEC)); }
static long sys_unshare(long f) { return R(unshare((int)f)); }
static long sys_sethostname(const char *h, ulong n) { return R(sethostname(h, n)); }
static long sys_fork(void) { return R(fork()); }
static long sys_setsid(void) { return R(setsid()); }
static long sys_dup2(int a, int b) { return R(dup2(a, b)); }
static long sys_chdir(const char *p) { return R(chdir(p)); }
static long sys_setgroups0(void) { return R(setgroups(0, 0)); }
static long sys_setgid(long g) { return R(setgid((gid_t)g)); }
static long sys_setuid(long u) { return R(setuid((uid_t)u)); }
static long sys_no_new_privs(void) { return R(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)); }
static long sys_reap_one(void) { return R(waitpid(-1, 0, WNOHANG)); }
static long sys_wait_child(long pid) { return R(waitpid((pid_t)pid, 0, 0)); }
static long sys_pause(void) { return R(pause()); }
static __attribute__((noreturn)) void sys_exit(int code) { _exit(code); }
static long sys_handle(int sig, void (*fn)(int)) {
    struct sigaction sa;
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return R(sigaction(sig, &sa, 0));
}
#else
#if defined(__x86_64__)
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_rt_sigaction 13
#define NR_rt_sigreturn 15
#define NR_pause 34
#define NR_dup2 33
#define NR_getpid 39
#define NR_fork 57
#define NR_exit 60
#define NR_wait4 61
#define NR_chdir 80
#define NR_setuid 105
#define NR_setgid 106
#define NR_setgroups 116
#define NR_setsid 112
#define NR_prctl 157
#define NR_sethostname 170
#define NR_unshare 272
#define NR_pipe2 293

static long sc6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp,%rbp\n  mov %rsp,%rdi\n  and $-16,%rsp\n  call pause_main\n  hlt\n"
        ".global pause_restorer\npause_restorer:\n  mov $15,%rax\n  syscall\n  hlt\n");

#elif defined(__aarch64__)
#define NR_read 63
#define NR_write 64
#define NR_close 57
#define NR_rt_sigaction 134
#define NR_getpid 172
#define NR_exit 93
#define NR_wait4 260
#define NR_chdir 49
#define NR_setuid 146
#define NR_setgid 144
#define NR_setgroups 159
#define NR_setsid 157
#define NR_prctl 167
#define NR_sethostname 161
#define NR_unshare 97
#define NR_openat 56
#define NR_dup3 24
#define NR_clone 220
#define NR_ppoll 73
#define NR_pipe2 59

static long sc6(long n, long a, long b, long c, long d, long e, long f) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
    return x0;
}

__asm__(".text\n.global _start\n_start:\n"
        "  mov x29,#0\n  mov x30,#0\n  mov x0,sp\n  and sp,x0,#-16\n  bl pause_main\n  brk #0\n"
        ".global pause_restorer\npause_restorer:\n  mov x8,#139\n  svc #0\n  brk #0\n");
#else
#error "freestanding pause supports x86_64 and aarch64; build with -DPAUSE_LIBC elsewhere"
#endif

#define PR_SET_NO_NEW_PRIVS 38
#define SA_RESTORER 0x04000000
#define SA_RESTART 0x10000000
#define sc0(n) sc6(n, 0, 0, 0, 0, 0, 0)
#define sc1(n, a) sc6(n, (long)(a), 0, 0, 0, 0, 0)
#define sc2(n, a, b) sc6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define sc3(n, a, b, c) sc6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sc4(n, a, b, c, d) sc6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

#if defined(__x86_64__)
static long sys_open(const char *p, int flags) { return sc3(NR_open, p, flags, 0); }
static long sys_dup2(int a, int b) { return sc2(NR_dup2, a, b); }
static long sys_fork(void) { return sc0(NR_fork); }
static long sys_pause(void) { return sc0(NR_pause); }
#else
static long sys_open(const char *p, int flags) { return sc4(NR_openat, -100, p, flags, 0); }
static long sys_dup2(int a, int b) { return a == b ? b : sc3(NR_dup3, a, b, 0); }
static long sys_fork(void) { return sc6(NR_clone, SIGCHLD, 0, 0, 0, 0, 0); }
static long sys_pause(void) { return sc6(NR_ppoll, 0, 0, 0, 0, 8, 0); }
#endif

struct kernel_sigaction {
    void (*handler)(int);
    ulong flags;
    void (*restorer)(void);
    ulong mask;
};
extern void pause_restorer(void);

static long sys_write(int fd, const void *b, ulong n) { return sc3(NR_write, fd, b, n); }
static long sys_close(int fd) { return sc1(NR_close, fd); }
static long sys_read(int fd, void *b, ulong n) { return sc3(NR_read, fd, b, n); }
static long sys_pipe(int fds[2]) { return sc2(NR_pipe2, fds, 02000000 /* O_CLOEXEC */); }
static long sys_unshare(long f) { return sc1(NR_unshare, f); }
static long sys_sethostname(const char *h, ulong n) { return sc2(NR_sethostname, h, n); }
static long sys_setsid(void) { return sc0(NR_setsid); }
static long sys_chdir(const char *p) { return sc1(NR_chdir, p); }
static long sys_setgroups0(void) { return sc2(NR_setgroups, 0, 0); }
static long sys_setgid(long g) { return sc1(NR_setgid, g); }
static long sys_setuid(long u) { return sc1(NR_setuid, u); }
static long sys_no_new_privs(void) { return sc6(NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); }
static long sys_reap_one(void) { return sc4(NR_wait4, -1, 0, WNOHANG, 0); }
static long sys_wait_child(long pid) { return sc4(NR_wait4, pid, 0, 0, 0); }
static __attribute__((noreturn)) void sys_exit(int code) {
    for (;;) sc1(NR_exit, code);
}
static long sys_handle(int sig, void (*fn)(int)) {
    struct kernel_sigaction sa = {fn, SA_RESTORER | SA_RESTART, pause_restorer, 0};
    return sc4(NR_rt_sigaction, sig, &sa, 0, 8);
}
#endif /* PAUSE_LIBC */

static ulong slen(const char *s) {
    ulong n = 0;
    while (s[n]) n++;
    return n;
}

static void put(int fd, const char *s) { sys_write(fd, s, slen(s)); }

static void put_num(int fd, long v) {
    char buf[24];
    int i = 23;
    buf[i] = 0;
    if (v < 0) v = -v;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 0);
    put(fd, buf + i);
}

/* Where errors go: the launcher's stderr, and in the forked pause the `ready` pipe (whose reader, the
 * launcher, relays them), because by then the pause's own stderr may already be /dev/null. */
static int report_fd = 2;

static __attribute__((noreturn)) void die(const char *step, long err) {
    put(report_fd, "pause: ");
    put(report_fd, step);
    put(report_fd, ": errno ");
    put_num(report_fd, err);
    put(report_fd, "\n");
    sys_exit(1);
}

static __attribute__((noreturn)) void quit(int sig) {
    (void)sig;
    sys_exit(0);
}

static void on_child(int sig) { (void)sig; }

static const char *getenv_(char **envp, const char *name) {
    ulong n = slen(name);
    for (; *envp; envp++) {
        const char *e = *envp;
        ulong i = 0;
        while (i < n && e[i] == name[i]) i++;
        if (i == n && e[n] == '=') return e + n + 1;
    }
    return 0;
}

static int has_word(const char *list, const char *word) {
    ulong n = slen(word);
    while (list && *list) {
        ulong i = 0;
        while (list[i] && list[i] != ',') i++;
        if (i == n) {
            ulong k = 0;
            while (k < n && list[k] == word[k]) k++;
            if (k == n) return 1;
        }
        list += i;
        if (*list == ',') list++;
    }
    return 0;
}

/* Write `value` into the file `path`; both are [start, end) slices copied into bounded buffers. */
static long write_file(const char *path, ulong plen, const char *value, ulong vlen) {
    char p[512];
    if (plen >= sizeof p) return -36; /* ENAMETOOLONG */
    for (ulong i = 0; i < plen; i++) p[i] = path[i];
    p[plen] = 0;
    long fd = sys_open(p, O_WRONLY);
    if (fd < 0) return fd;
    long r = sys_write((int)fd, value, vlen);
    sys_close((int)fd);
    return r < 0 ? r : 0;
}

/* PODHOST_PAUSE_CGROUPS: "file:file:..." each gets "0" (the writer itself). */
static void join_cgroups(const char *list) {
    while (list && *list) {
        ulong i = 0;
        while (list[i] && list[i] != ':') i++;
        long r = write_file(list, i, "0", 1);
        if (r < 0) die("join cgroup", -r);
        list += i;
        if (*list == ':') list++;
    }
}

/* PODHOST_PAUSE_SYSCTLS: "/proc/sys/a/b=value;..." written after unshare, so they land in the pod's
 * namespaces. */
static void apply_sysctls(const char *list) {
    while (list && *list) {
        ulong i = 0, eq = 0;
        while (list[i] && list[i] != ';') {
            if (list[i] == '=' && !eq) eq = i;
            i++;
        }
        if (!eq) die("sysctl syntax", 22);
        long r = write_file(list, eq, list + eq + 1, i - eq - 1);
        if (r < 0) die("sysctl", -r);
        list += i;
        if (*list == ';') list++;
    }
}

static void handle(int sig, void (*fn)(int)) {
    long r = sys_handle(sig, fn);
    if (r < 0) die("sigaction", -r);
}

static void install_handlers(void) {
    handle(SIGINT, quit);
    handle(SIGTERM, quit);
    handle(SIGCHLD, on_child);
}

static __attribute__((noreturn)) void wait_for_signals(void) {
    for (;;) {
        sys_pause();
        while (sys_reap_one() > 0) {
        }
    }
}

static __attribute__((noreturn)) void run_pause(void) {
    install_handlers();
    wait_for_signals();
}

static __attribute__((noreturn)) void launch(const char *ns, char **envp) {
    long flags = 0;
    if (has_word(ns, "net")) flags |= CLONE_NEWNET;
    if (has_word(ns, "ipc")) flags |= CLONE_NEWIPC;
    if (has_word(ns, "uts")) flags |= CLONE_NEWUTS;
    if (has_word(ns, "pid")) flags |= CLONE_NEWPID;

    join_cgroups(getenv_(envp, "PODHOST_PAUSE_CGROUPS"));
    const char *userns = getenv_(envp, "PODHOST_PAUSE_USERNS");
    int in_userns = userns && userns[0] == '1';
    if (in_userns) {
        long r = sys_unshare(CLONE_NEWUSER);
        if (r < 0) die("unshare user", -r);
        put(1, "userns\n");
        char go;
        do r = sys_read(0, &go, 1);
        while (r == -4); /* EINTR */
        if (r != 1) die("userns maps", r < 0 ? -r : 5 /* EIO */);
        if ((r = sys_setgid(0)) < 0) die("setgid 0 in userns", -r);
        if ((r = sys_setuid(0)) < 0) die("setuid 0 in userns", -r);
    }
    if (flags) {
        long r = sys_unshare(flags);
        if (r < 0) die("unshare", -r);
    }
    const char *host = getenv_(envp, "PODHOST_PAUSE_HOSTNAME");
    if (host && *host) {
        long r = sys_sethostname(host, slen(host));
        if (r < 0) die("sethostname", -r);
    }
    apply_sysctls(getenv_(envp, "PODHOST_PAUSE_SYSCTLS"));

    /* The launcher reports the PID only once the pause has shed its privileges, holds nothing of the
     * launcher's and can take signals: the child writes "k" on `ready` when it is the pause the daemon
     * may rely on, or its error and exits. EOF without "k" means it failed. */
    int ready[2];
    long r = sys_pipe(ready);
    if (r < 0) die("pipe", -r);
    long child = sys_fork();
    if (child < 0) die("fork", -child);
    if (child > 0) {
        char msg[256];
        ulong n = 0;
        sys_close(ready[1]);
        while (n < sizeof msg - 1) {
            long got = sys_read(ready[0], msg + n, sizeof msg - 1 - n);
            if (got == -4) continue; /* EINTR */
            if (got <= 0) break;
            n += (ulong)got;
        }
        msg[n] = 0;
        if (n == 1 && msg[0] == 'k') {
            put_num(1, child);
            put(1, "\n");
            sys_exit(0);
        }
        /* Failed: the child said why (or died unable to); it has exited or is exiting, so wait for it,
         * leaving no orphan behind, then relay its words. */
        while (sys_wait_child(child) == -4) {
        }
        if (n) put(2, msg);
        else put(2, "pause: ready: child exited without reporting\n");
        sys_exit(1);
    }
    sys_close(ready[0]);
    report_fd = ready[1];
    /* The pause itself: its own session, then shed every privilege, then /dev/null for stdio. /dev/null
     * is opened after setuid, as uid 65535: the descriptor the pause keeps carries no more access than
     * the pause itself has, and a /dev/null that is not the world-writable device (say, a root-only file
     * that replaced it) fails here, loudly, instead of being held open with root's rights. */
    if ((r = sys_setsid()) < 0) die("setsid", -r);
    if ((r = sys_chdir("/")) < 0) die("chdir /", -r);
    if ((r = sys_setgroups0()) < 0) die("setgroups", -r);
    /* In a user namespace an unmapped id answers EINVAL: the pause stays the mapped root then. */
    r = sys_setgid(PAUSE_UID);
    if (r < 0 && !(in_userns && r == -EINVAL)) die("setgid", -r);
    if (r == 0 && (r = sys_setuid(PAUSE_UID)) < 0 && !(in_userns && r == -EINVAL)) die("setuid", -r);
    long devnull = sys_open("/dev/null", O_RDWR);
    if (devnull < 0) die("open /dev/null", -devnull);
    for (int fd = 0; fd < 3; fd++) {
        if ((r = sys_dup2((int)devnull, fd)) < 0) die("dup2 /dev/null", -r);
    }
    if (devnull > 2) sys_close((int)devnull);
    if ((r = sys_no_new_privs()) < 0) die("no_new_privs", -r);
    install_handlers();
    if ((r = sys_write(ready[1], "k", 1)) != 1) die("report ready", r < 0 ? -r : 5 /* EIO */);
    sys_close(ready[1]);
    wait_for_signals();
}

static void pause_entry(long argc, char **argv, char **envp) {
    if (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v') {
        put(1, PAUSE_VERSION "\n");
        sys_exit(0);
    }
    const char *ns = getenv_(envp, "PODHOST_PAUSE_NS");
    if (ns) launch(ns, envp);
    run_pause();
}

#ifdef PAUSE_LIBC
int main(int argc, char **argv, char **envp) {
    pause_entry(argc, argv, envp);
    return 0;
}
#else
__attribute__((used)) void pause_main(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    pause_entry(argc, argv, argv + argc + 1);
}
#endif
