/*
 * hidraw_preload.c: make hidapi (linux/hid.c, the hidraw backend) open an
 * emulated FIDO key. TEST ONLY, Linux only, loaded with LD_PRELOAD.
 *
 * hid_open_path(path) does open(path, O_RDWR|O_CLOEXEC), then
 * ioctl(HIDIOCGRDESCSIZE) to check it is a hidraw node; hid_write/hid_read
 * are plain write/read (and poll for timed reads); hid_close is close.
 *
 * When `path` is a Unix socket (open() on one fails with ENXIO), this library
 * connects a SOCK_SEQPACKET socket to it instead and remembers the fd. On such
 * an fd:
 *   - ioctl answers the hidraw queries with a FIDO report descriptor (usage
 *     page 0xF1D0, usage 0x01, 64-byte input and output reports) and
 *     made-up USB ids; feature/input/output report ioctls fail with EINVAL;
 *   - read/poll are the socket's own: one 64-byte message per input report;
 *   - read returns -1/EIO once the device end has gone, and write fails with
 *     ENODEV (without SIGPIPE), which is what a hidraw node does when its key
 *     is pulled out;
 *   - close forgets the fd.
 * Every other call, and every open of anything that is not a socket, goes to
 * the real libc unchanged.
 */
#ifdef __linux__
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/hidraw.h>
#include <linux/input.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Emulated fds are flagged in a table indexed by fd (fds past it are never emulated). */
#define MAX_FD 4096
static unsigned char emulated[MAX_FD];

static int is_emulated(int fd) {
	return fd >= 0 && fd < MAX_FD && __atomic_load_n(&emulated[fd], __ATOMIC_ACQUIRE);
}

static void set_emulated(int fd, unsigned char on) {
	if (fd >= 0 && fd < MAX_FD)
		__atomic_store_n(&emulated[fd], on, __ATOMIC_RELEASE);
}

/* glibc declares these only under _FORTIFY_SOURCE. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);

/* The next definition of `name` after this library (libc's), looked up once. */
#define REAL(name)                                                          \
	({                                                                  \
		static __typeof__(&name) real_##name;                       \
		if (!__atomic_load_n(&real_##name, __ATOMIC_ACQUIRE))       \
			__atomic_store_n(&real_##name,                      \
					 (__typeof__(&name))dlsym(RTLD_NEXT, #name), \
					 __ATOMIC_RELEASE);                 \
		__atomic_load_n(&real_##name, __ATOMIC_ACQUIRE);            \
	})

/* A FIDO HID report descriptor (CTAP 2.1 §11.2.8.1): one 64-byte IN and one 64-byte OUT report. */
static const unsigned char fido_report_descriptor[] = {
	0x06, 0xD0, 0xF1, /* Usage Page (FIDO Alliance, 0xF1D0) */
	0x09, 0x01,       /* Usage (CTAPHID authenticator device) */
	0xA1, 0x01,       /* Collection (Application) */
	0x09, 0x20,       /*   Usage (Input Report Data) */
	0x15, 0x00,       /*   Logical Minimum (0) */
	0x26, 0xFF, 0x00, /*   Logical Maximum (255) */
	0x75, 0x08,       /*   Report Size (8) */
	0x95, 0x40,       /*   Report Count (64) */
	0x81, 0x02,       /*   Input (Data, Var, Abs) */
	0x09, 0x21,       /*   Usage (Output Report Data) */
	0x15, 0x00,       /*   Logical Minimum (0) */
	0x26, 0xFF, 0x00, /*   Logical Maximum (255) */
	0x75, 0x08,       /*   Report Size (8) */
	0x95, 0x40,       /*   Report Count (64) */
	0x91, 0x02,       /*   Output (Data, Var, Abs) */
	0xC0,             /* End Collection */
};

static const char emulated_name[] = "touchgate emulated FIDO key";
static const char emulated_phys[] = "touchgate-emulated/input0";

/* Open `path` as an emulated device if it is a Unix socket; -1 with errno otherwise. */
static int open_socket_device(const char *path, int flags) {
	struct stat st;
	if (stat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) {
		errno = ENXIO;
		return -1;
	}
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	int type = SOCK_SEQPACKET | ((flags & O_CLOEXEC) ? SOCK_CLOEXEC : 0) |
		   ((flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0);
	int fd = socket(AF_UNIX, type, 0);
	if (fd < 0)
		return -1;
	if (fd >= MAX_FD || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		int saved = fd >= MAX_FD ? EMFILE : errno;
		REAL(close)(fd);
		/* No listener behind the socket file: the device is gone. */
		errno = (saved == ECONNREFUSED || saved == ENOENT) ? ENODEV : saved;
		return -1;
	}
	set_emulated(fd, 1);
	return fd;
}

/* Common tail of the open family: only a failed open with ENXIO can be a socket. */
static int after_open(int fd, const char *path, int flags) {
	if (fd >= 0 || errno != ENXIO)
		return fd;
	return open_socket_device(path, flags);
}

static mode_t mode_arg(int flags, va_list ap) {
	return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

int open(const char *path, int flags, ...) {
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return after_open(REAL(open)(path, flags, mode), path, flags);
}

int open64(const char *path, int flags, ...) {
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return after_open(REAL(open64)(path, flags, mode), path, flags);
}

/* The _FORTIFY_SOURCE entry points (no mode argument). */
int __open_2(const char *path, int flags) {
	return after_open(REAL(__open_2)(path, flags), path, flags);
}

int __open64_2(const char *path, int flags) {
	return after_open(REAL(__open64_2)(path, flags), path, flags);
}

int openat(int dirfd, const char *path, int flags, ...) {
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	int fd = REAL(openat)(dirfd, path, flags, mode);
	/* Only absolute paths or paths relative to the cwd are emulated. */
	if (path[0] == '/' || dirfd == AT_FDCWD)
		return after_open(fd, path, flags);
	return fd;
}

/* Copy a string answer of a HIDIOCGRAW{NAME,PHYS}(len) ioctl: returns the length copied. */
static int copy_string(void *arg, unsigned int len, const char *s) {
	size_t n = strlen(s) + 1;
	if (n > len)
		n = len;
	memcpy(arg, s, n);
	if (n > 0)
		((char *)arg)[n - 1] = '\0';
	return (int)n;
}

static int emulated_ioctl(unsigned long req, void *arg) {
	unsigned int len = _IOC_SIZE(req);
	unsigned long nr_type = req & ~((unsigned long)_IOC_SIZEMASK << _IOC_SIZESHIFT);

	if (req == HIDIOCGRDESCSIZE) {
		*(int *)arg = (int)sizeof(fido_report_descriptor);
		return 0;
	}
	if (req == HIDIOCGRDESC) {
		struct hidraw_report_descriptor *d = arg;
		if (d->size > sizeof(fido_report_descriptor)) {
			errno = EINVAL;
			return -1;
		}
		memcpy(d->value, fido_report_descriptor, d->size);
		return 0;
	}
	if (req == HIDIOCGRAWINFO) {
		struct hidraw_devinfo *info = arg;
		info->bustype = BUS_USB;
		info->vendor = 0x1209;  /* pid.codes test VID */
		info->product = 0x7467; /* "tg" */
		return 0;
	}
	/* Variable-length requests: compare with the length bits masked out. */
	if (nr_type == (HIDIOCGRAWNAME(0) & ~((unsigned long)_IOC_SIZEMASK << _IOC_SIZESHIFT)))
		return copy_string(arg, len, emulated_name);
	if (nr_type == (HIDIOCGRAWPHYS(0) & ~((unsigned long)_IOC_SIZEMASK << _IOC_SIZESHIFT)))
		return copy_string(arg, len, emulated_phys);
	/* Feature/input/output reports (and anything else hidraw-ish): the key has none. */
	if (_IOC_TYPE(req) == 'H') {
		errno = EINVAL;
		return -1;
	}
	return -2; /* not a hidraw request: let the real ioctl have it */
}

int ioctl(int fd, unsigned long req, ...) {
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (is_emulated(fd)) {
		int r = emulated_ioctl(req, arg);
		if (r != -2)
			return r;
	}
	return REAL(ioctl)(fd, req, arg);
}

ssize_t read(int fd, void *buf, size_t count) {
	ssize_t r = REAL(read)(fd, buf, count);
	if (is_emulated(fd)) {
		/* End of stream or reset: the device end has closed, i.e. the key was pulled out. */
		if ((r == 0 && count > 0) || (r < 0 && errno == ECONNRESET)) {
			errno = EIO;
			return -1;
		}
	}
	return r;
}

ssize_t write(int fd, const void *buf, size_t count) {
	if (!is_emulated(fd))
		return REAL(write)(fd, buf, count);
	ssize_t r = send(fd, buf, count, MSG_NOSIGNAL);
	if (r < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN))
		errno = ENODEV;
	return r;
}

int close(int fd) {
	set_emulated(fd, 0);
	return REAL(close)(fd);
}

#endif /* __linux__ */
