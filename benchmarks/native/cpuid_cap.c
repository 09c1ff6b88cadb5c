/*
 * cpuid_cap.c - run a process's runtimes on the AVX2 code paths of an AVX-512 CPU (benchmarks/isa_cap.py).
 *
 * Runtimes pick their int8 and fp32 kernels from the CPUID instruction (onnxruntime's MLAS directly, XNNPACK through
 * pytorch/cpuinfo). benchmarks/isa_cap.py copies their shared libraries and replaces each `cpuid` (0F A2) there with
 * `ud2` (0F 0B, the same two bytes), listing the sites it replaced (library name and address) in the file named by
 * FAT_ISA_CAP_SITES. This library, loaded with LD_PRELOAD, catches the SIGILL of a listed site, executes the real
 * CPUID, clears the AVX-512, VNNI (AVX-512 and VEX), AMX and GFNI feature bits, writes the result into the
 * registers and steps over the instruction. A SIGILL anywhere else is not ours: the default action is restored and
 * the instruction faults again. The CPU's vendor, family, model, caches and core count are left as they are.
 *
 * What it is not: the kernels are the AVX2 ones a Zen 3 or Haswell-class host would pick, run on this CPU's cores
 * (other port counts, caches, clocks). Timing ratios measured under it are a proxy for such hosts, not their numbers.
 *
 * At exit it appends to the file named by FAT_ISA_CAP_REPORT how many CPUID calls it answered per library (one line
 * per library loaded and process): zero for a loaded runtime means its kernels were not capped. It sets FAT_DEPLOY_ISA_CAP=avx2 for the process so fat_deploy.environment reports the capped ISA.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#define MAX_SITES 4096
#define MAX_LIBRARIES 32
#define NAME_LENGTH 128

struct site { char library[NAME_LENGTH]; uintptr_t address; };

static struct site sites[MAX_SITES];
static size_t site_count;
static char libraries[MAX_LIBRARIES][NAME_LENGTH];
static volatile unsigned long answered[MAX_LIBRARIES];
static size_t library_count;

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int library_index(const char *name) {
    for (size_t i = 0; i < library_count; i++)
        if (strcmp(libraries[i], name) == 0) return (int)i;
    return -1;
}

/* Leaf 7 is where the AVX-512, VNNI and AMX bits live (Intel SDM vol. 2A, CPUID; AMD APM vol. 3, appendix E). */
static void cap_to_avx2(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
    if (leaf == 7 && subleaf == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        regs[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                     (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, GFNI 8, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        regs[2] &= ~((1u << 1) | (1u << 6) | (1u << 8) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512-FP16 23, AMX-TILE 24, AMX-INT8 25 */
        regs[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && subleaf == 1) {
        /* EAX: AVX-VNNI 4, AVX512-BF16 5, AMX-FP16 21, AVX-IFMA 23 */
        regs[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        /* EDX: AVX-VNNI-INT8 4, AVX-NE-CONVERT 5, AMX-COMPLEX 8, AVX-VNNI-INT16 10, AVX10 19 */
        regs[3] &= ~((1u << 4) | (1u << 5) | (1u << 8) | (1u << 10) | (1u << 19));
    } else if (leaf == 0x24) {
        regs[0] = regs[1] = regs[2] = regs[3] = 0; /* AVX10 converged vector ISA leaf */
    }
}

static int listed_site(const void *address) {
    Dl_info where;
    if (!dladdr(address, &where) || !where.dli_fname || !where.dli_fbase) return -1;
    const char *name = base_name(where.dli_fname);
    uintptr_t offset = (uintptr_t)address - (uintptr_t)where.dli_fbase;
    for (size_t i = 0; i < site_count; i++)
        if (sites[i].address == offset && strcmp(sites[i].library, name) == 0) return library_index(name);
    return -1;
}

static void on_sigill(int signal_number, siginfo_t *info, void *context) {
    (void)info;
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *instruction = (const unsigned char *)regs[REG_RIP];
    int library = instruction[0] == 0x0F && instruction[1] == 0x0B ? listed_site(instruction) : -1;
    if (library < 0) {
        signal(signal_number, SIG_DFL); /* not a replaced CPUID: fault as the process would have */
        return;
    }
    uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX], out[4];
    __cpuid_count(leaf, subleaf, out[0], out[1], out[2], out[3]);
    cap_to_avx2(leaf, subleaf, out);
    regs[REG_RAX] = out[0]; /* CPUID zero-extends into the 64-bit registers */
    regs[REG_RBX] = out[1];
    regs[REG_RCX] = out[2];
    regs[REG_RDX] = out[3];
    regs[REG_RIP] += 2;
    answered[library]++;
}

static void read_sites(const char *path) {
    FILE *file = fopen(path, "r");
    if (!file) {
        fprintf(stderr, "isa-cap: cannot read the site list %s\n", path);
        exit(2);
    }
    char name[NAME_LENGTH];
    unsigned long long address;
    while (fscanf(file, "%127s %llx", name, &address) == 2) {
        if (site_count == MAX_SITES || (library_index(name) < 0 && library_count == MAX_LIBRARIES)) {
            fprintf(stderr, "isa-cap: %s lists more than %d sites or %d libraries\n", path, MAX_SITES, MAX_LIBRARIES);
            exit(2);
        }
        if (library_index(name) < 0) strcpy(libraries[library_count++], name);
        strcpy(sites[site_count].library, name);
        sites[site_count++].address = (uintptr_t)address;
    }
    fclose(file);
}

__attribute__((constructor)) static void start(void) {
    const char *path = getenv("FAT_ISA_CAP_SITES");
    if (!path) return;
    read_sites(path);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigill;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGILL, &action, NULL);
    setenv("FAT_DEPLOY_ISA_CAP", "avx2", 1);
}

static int note_loaded(struct dl_phdr_info *info, size_t size, void *loaded) {
    (void)size;
    int library = info->dlpi_name ? library_index(base_name(info->dlpi_name)) : -1;
    if (library >= 0) ((int *)loaded)[library] = 1;
    return 0;
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("FAT_ISA_CAP_REPORT");
    FILE *file = path && site_count ? fopen(path, "a") : NULL;
    if (!file) return;
    int loaded[MAX_LIBRARIES] = {0};
    dl_iterate_phdr(note_loaded, loaded);
    for (size_t i = 0; i < library_count; i++)
        if (loaded[i]) fprintf(file, "%s %lu\n", libraries[i], answered[i]);
    fclose(file);
}
