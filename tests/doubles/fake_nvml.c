/* TEST DOUBLE of libnvidia-ml.so.1 (uvkernel's test suite): not NVIDIA's library.
 *
 * Built with gcc during the test run (tests/doubles/nvml.py) and found through LD_LIBRARY_PATH, by the probe
 * (ctypes) and by the real torch's own NVML helpers alike.  Behaviour comes from UVKERNEL_FAKE_NVML, read at
 * nvmlInit: "key=value" items separated by ';'
 *   init=<code>        nvmlInit returns this (18: LIB_RM_VERSION_MISMATCH, 9: DRIVER_NOT_LOADED, ...)
 *   hang=1             nvmlInit never returns
 *   driver=<text>      nvmlSystemGetDriverVersion
 *   cuda=<int>         nvmlSystemGetCudaDriverVersion, e.g. 12040 for 12.4
 *   dev=<name>,<uuid>,<major>,<minor>,<mig 0|1>,<memory bytes>,<minor number>  (repeatable, in index order)
 *   mig=<parent index>,<uuid>,<name>                                          (repeatable)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_DEV 16
#define MAX_MIG 64

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { char name[96]; char uuid[96]; int major, minor, mig; unsigned long long mem; unsigned minor_number; } dev_t_;
typedef struct { int parent; char uuid[96]; char name[96]; } mig_t_;

static dev_t_ devs[MAX_DEV];
static mig_t_ migs[MAX_MIG];
static int ndev, nmig, initialized, init_rc;
static char driver[80] = "550.54.15";
static int cuda_version = 12040;

static void field(char **cursor, char *out, size_t size) {
    char *end = strchr(*cursor, ',');
    size_t n = end ? (size_t)(end - *cursor) : strlen(*cursor);
    if (n >= size) n = size - 1;
    memcpy(out, *cursor, n);
    out[n] = 0;
    *cursor = end ? end + 1 : *cursor + strlen(*cursor);
}

static void configure(void) {
    const char *spec = getenv("UVKERNEL_FAKE_NVML");
    char *copy, *item, *save = NULL, buf[96];
    ndev = nmig = 0;
    init_rc = 0;
    if (!spec) return;
    copy = strdup(spec);
    for (item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        char *value = strchr(item, '=');
        if (!value) continue;
        *value++ = 0;
        if (!strcmp(item, "init")) init_rc = atoi(value);
        else if (!strcmp(item, "hang") && atoi(value)) { for (;;) sleep(60); }
        else if (!strcmp(item, "driver")) { strncpy(driver, value, sizeof driver - 1); }
        else if (!strcmp(item, "cuda")) cuda_version = atoi(value);
        else if (!strcmp(item, "dev") && ndev < MAX_DEV) {
            dev_t_ *d = &devs[ndev++];
            char *c = value;
            memset(d, 0, sizeof *d);
            field(&c, d->name, sizeof d->name);
            field(&c, d->uuid, sizeof d->uuid);
            field(&c, buf, sizeof buf); d->major = atoi(buf);
            field(&c, buf, sizeof buf); d->minor = atoi(buf);
            field(&c, buf, sizeof buf); d->mig = atoi(buf);
            field(&c, buf, sizeof buf); d->mem = strtoull(buf, NULL, 10);
            field(&c, buf, sizeof buf); d->minor_number = buf[0] ? (unsigned)atoi(buf) : (unsigned)(ndev - 1);
        } else if (!strcmp(item, "mig") && nmig < MAX_MIG) {
            mig_t_ *m = &migs[nmig++];
            char *c = value;
            field(&c, buf, sizeof buf); m->parent = atoi(buf);
            field(&c, m->uuid, sizeof m->uuid);
            field(&c, m->name, sizeof m->name);
        }
    }
    free(copy);
}

static int is_dev(void *h) { return h >= (void *)devs && h < (void *)(devs + ndev); }
static int is_mig(void *h) { return h >= (void *)migs && h < (void *)(migs + nmig); }

int nvmlInit_v2(void) { configure(); if (init_rc) return init_rc; initialized = 1; return 0; }
int nvmlInit(void) { return nvmlInit_v2(); }
int nvmlInitWithFlags(unsigned flags) { (void)flags; return nvmlInit_v2(); }
int nvmlShutdown(void) { if (!initialized) return 1; initialized = 0; return 0; }

const char *nvmlErrorString(int rc) {
    switch (rc) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 6: return "Not Found";
    case 9: return "Driver Not Loaded";
    case 12: return "NVML Shared Library Not Found";
    case 18: return "Driver/library version mismatch";
    default: return "Unknown Error";
    }
}

int nvmlSystemGetDriverVersion(char *out, unsigned size) {
    if (!initialized) return 1;
    if (!out || size < strlen(driver) + 1) return 2;
    strcpy(out, driver);
    return 0;
}
int nvmlSystemGetCudaDriverVersion(int *v) { if (!initialized) return 1; if (!v) return 2; *v = cuda_version; return 0; }
int nvmlSystemGetCudaDriverVersion_v2(int *v) { return nvmlSystemGetCudaDriverVersion(v); }
int nvmlDeviceGetCount_v2(unsigned *n) { if (!initialized) return 1; if (!n) return 2; *n = (unsigned)ndev; return 0; }
int nvmlDeviceGetCount(unsigned *n) { return nvmlDeviceGetCount_v2(n); }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **h) {
    if (!initialized) return 1;
    if (!h || i >= (unsigned)ndev) return 2;
    *h = &devs[i];
    return 0;
}
int nvmlDeviceGetHandleByIndex(unsigned i, void **h) { return nvmlDeviceGetHandleByIndex_v2(i, h); }

static int copy_text(const char *text, char *out, unsigned size) {
    if (!out || size < strlen(text) + 1) return 2;
    strcpy(out, text);
    return 0;
}
int nvmlDeviceGetName(void *h, char *out, unsigned size) {
    if (!initialized) return 1;
    if (is_dev(h)) return copy_text(((dev_t_ *)h)->name, out, size);
    if (is_mig(h)) return copy_text(((mig_t_ *)h)->name, out, size);
    return 2;
}
int nvmlDeviceGetUUID(void *h, char *out, unsigned size) {
    if (!initialized) return 1;
    if (is_dev(h)) return copy_text(((dev_t_ *)h)->uuid, out, size);
    if (is_mig(h)) return copy_text(((mig_t_ *)h)->uuid, out, size);
    return 2;
}
int nvmlDeviceGetCudaComputeCapability(void *h, int *major, int *minor) {
    if (!initialized) return 1;
    if (!is_dev(h) || !major || !minor) return 2;
    *major = ((dev_t_ *)h)->major;
    *minor = ((dev_t_ *)h)->minor;
    return 0;
}
int nvmlDeviceGetMemoryInfo(void *h, nvmlMemory_t *m) {
    if (!initialized) return 1;
    if (!is_dev(h) || !m) return 2;
    m->total = ((dev_t_ *)h)->mem;
    m->used = m->total / 100;
    m->free = m->total - m->used;
    return 0;
}
int nvmlDeviceGetMinorNumber(void *h, unsigned *n) {
    if (!initialized) return 1;
    if (!is_dev(h) || !n) return 2;
    *n = ((dev_t_ *)h)->minor_number;
    return 0;
}
int nvmlDeviceGetMigMode(void *h, unsigned *current, unsigned *pending) {
    if (!initialized) return 1;
    if (!is_dev(h) || !current || !pending) return 2;
    if (!((dev_t_ *)h)->mig) return 3; /* NOT_SUPPORTED, as on GPUs without MIG */
    *current = *pending = 1;
    return 0;
}
int nvmlDeviceGetMaxMigDeviceCount(void *h, unsigned *n) {
    if (!initialized) return 1;
    if (!is_dev(h) || !n) return 2;
    *n = ((dev_t_ *)h)->mig ? 7 : 0;
    return 0;
}
int nvmlDeviceGetMigDeviceHandleByIndex(void *h, unsigned slot, void **out) {
    int parent, i, seen = 0;
    if (!initialized) return 1;
    if (!is_dev(h) || !out) return 2;
    parent = (int)((dev_t_ *)h - devs);
    for (i = 0; i < nmig; i++) {
        if (migs[i].parent != parent) continue;
        if ((unsigned)seen++ == slot) { *out = &migs[i]; return 0; }
    }
    return 6; /* NOT_FOUND: an empty slot */
}
