package udp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func unsafePointer(b *byte) *unix.Cmsghdr { return (*unix.Cmsghdr)(unsafe.Pointer(b)) }
