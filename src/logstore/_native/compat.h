/* Positional file I/O, durability and wall-clock time across POSIX and Windows.
 *
 * The segment code only ever reads and writes at explicit positions (never through a file
 * pointer), so each platform needs just these few calls. Descriptors are C runtime fds as
 * returned by Python's os.open.
 */
#ifndef LOGSTORE_COMPAT_H
#define LOGSTORE_COMPAT_H

#include <stdint.h>
#include <stddef.h>

#if defined(_WIN32)
#include <errno.h>
#include <io.h>
#include <time.h>
#include <windows.h>

typedef long long ls_ssize_t;

static ls_ssize_t ls_positional(int fd, void *buf, size_t n, int64_t pos, int write) {
    HANDLE h = (HANDLE)_get_osfhandle(fd);
    OVERLAPPED ov;
    DWORD done = 0, want = n > 0x40000000u ? 0x40000000u : (DWORD)n;
    BOOL ok;
    if (h == INVALID_HANDLE_VALUE) { errno = EBADF; return -1; }
    memset(&ov, 0, sizeof ov);
    ov.Offset = (DWORD)((uint64_t)pos & 0xffffffffu);
    ov.OffsetHigh = (DWORD)((uint64_t)pos >> 32);
    ok = write ? WriteFile(h, buf, want, &done, &ov) : ReadFile(h, buf, want, &done, &ov);
    if (!ok) {
        if (!write && GetLastError() == ERROR_HANDLE_EOF) return 0;
        errno = EIO;
        return -1;
    }
    return (ls_ssize_t)done;
}
static ls_ssize_t ls_pread(int fd, void *buf, size_t n, int64_t pos) { return ls_positional(fd, buf, n, pos, 0); }
static ls_ssize_t ls_pwrite(int fd, const void *buf, size_t n, int64_t pos) {
    return ls_positional(fd, (void *)buf, n, pos, 1);
}
static int ls_fdatasync(int fd) {
    HANDLE h = (HANDLE)_get_osfhandle(fd);
    if (h == INVALID_HANDLE_VALUE || !FlushFileBuffers(h)) { errno = EIO; return -1; }
    return 0;
}
static int ls_ftruncate(int fd, int64_t size) { return _chsize_s(fd, size) == 0 ? 0 : -1; }
static int ls_close(int fd) { return _close(fd); }
static int64_t ls_now_ms(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#else
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef ssize_t ls_ssize_t;

static ls_ssize_t ls_pread(int fd, void *buf, size_t n, int64_t pos) { return pread(fd, buf, n, (off_t)pos); }
static ls_ssize_t ls_pwrite(int fd, const void *buf, size_t n, int64_t pos) { return pwrite(fd, buf, n, (off_t)pos); }
static int ls_fdatasync(int fd) {
#if defined(__APPLE__)
    return fsync(fd);  /* macOS declares no fdatasync; F_FULLFSYNC would also flush the drive cache */
#else
    return fdatasync(fd);
#endif
}
static int ls_ftruncate(int fd, int64_t size) { return ftruncate(fd, (off_t)size); }
static int ls_close(int fd) { return close(fd); }
static int64_t ls_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
#endif

#endif
