/* Hide instruction sets from every CPUID a process executes, so its libraries dispatch the
 * kernels they would pick on an older CPU (AVX2 without AVX-512, VNNI or AMX; AVX-512 without
 * BF16 or AMX), at full speed.
 *
 * Loaded with LD_PRELOAD by bench/cpu_class.sh. Its constructor turns on Linux's CPUID
 * faulting (arch_prctl ARCH_SET_CPUID, kept by every thread and child created later, dropped
 * at exec): each CPUID then raises SIGSEGV, whose handler runs the real CPUID, clears the
 * hidden bits and steps over the instruction. Code that ran before the constructor (the
 * dynamic loader's own choice of memcpy) keeps what it chose. SONA_CPU_CLASS picks the mask:
 *   avx2         no AVX-512 (any), no AVX-VNNI, no AVX512-BF16/FP16, no AMX
 *   avx512-vnni  AVX-512 with VNNI, but no BF16, FP16, AVX-VNNI or AMX
 *   avx512-bf16  AVX-512 with VNNI and BF16, but no FP16, AVX-VNNI or AMX (AMD Zen 4, Intel
 *                Cooper Lake): bf16 computed by AVX-512 dot products instead of AMX tiles
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

struct mask {
    uint32_t l1_ecx, l7_ebx, l7_ecx, l7_edx, l7s1_eax, l7s1_edx, ld_eax;
};

#define BIT(n) (1u << (n))
/* leaf 7: EBX avx512 f dq ifma pf er cd bw vl; ECX vbmi vbmi2 vnni bitalg vpopcntdq;
 * EDX 4vnniw 4fmaps vp2intersect amx-bf16 avx512-fp16 amx-tile amx-int8.
 * leaf 7.1: EAX avx-vnni avx512-bf16 amx-fp16 avx-ifma; EDX avx-vnni-int8 avx-ne-convert.
 * leaf 0xd: the XSAVE state components of AVX-512 (5-7) and AMX (17-18). */
static const struct mask AVX2 = {
    0,
    BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31),
    BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14),
    BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25),
    BIT(4) | BIT(5) | BIT(21) | BIT(23),
    BIT(4) | BIT(5),
    BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18),
};
static const struct mask AVX512_VNNI = {
    0, 0, 0, BIT(22) | BIT(23) | BIT(24) | BIT(25), BIT(4) | BIT(5) | BIT(21) | BIT(23),
    BIT(4) | BIT(5), BIT(17) | BIT(18),
};
static const struct mask AVX512_BF16 = {
    0, 0, 0, BIT(22) | BIT(23) | BIT(24) | BIT(25), BIT(4) | BIT(21) | BIT(23),
    BIT(4) | BIT(5), BIT(17) | BIT(18),
};

static struct mask hide;
static struct sigaction previous;

static void faulting(int on) { syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)r[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: whoever handled it before */
        sigaction(SIGSEGV, &previous, NULL);
        return; /* the instruction runs again and faults into that handler */
    }
    uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
    faulting(0);
    __cpuid_count(leaf, sub, a, b, c, d);
    faulting(1);
    if (leaf == 1) c &= ~hide.l1_ecx;
    if (leaf == 7 && sub == 0) { b &= ~hide.l7_ebx; c &= ~hide.l7_ecx; d &= ~hide.l7_edx; }
    if (leaf == 7 && sub == 1) { a &= ~hide.l7s1_eax; d &= ~hide.l7s1_edx; }
    if (leaf == 0xd && sub == 0) a &= ~hide.ld_eax;
    r[REG_RAX] = a; r[REG_RBX] = b; r[REG_RCX] = c; r[REG_RDX] = d;
    r[REG_RIP] += 2;
    (void)sig; (void)info;
}

__attribute__((constructor)) static void start(void) {
    const char *name = getenv("SONA_CPU_CLASS");
    if (name == NULL || strcmp(name, "host") == 0) return;
    if (strcmp(name, "avx2") == 0) hide = AVX2;
    else if (strcmp(name, "avx512-vnni") == 0) hide = AVX512_VNNI;
    else if (strcmp(name, "avx512-bf16") == 0) hide = AVX512_BF16;
    else { fprintf(stderr, "mask_cpuid: unknown SONA_CPU_CLASS %s\n", name); _exit(2); }
    struct sigaction action = {0};
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        perror("mask_cpuid: this kernel or CPU has no CPUID faulting");
        _exit(77);
    }
}
