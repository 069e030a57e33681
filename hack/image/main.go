package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// main reads the inputs named by flags, builds, writes and prints the digest last. Exit status 2 for bad flags, 1
// for a failed build.
func main() {
	var (
		binary  = flag.String("binary", "", "Path of the static hcpsnap binary.")
		certs   = flag.String("ca-certs", "/etc/ssl/certs/ca-certificates.crt", "Path of the PEM bundle of CA certificates.")
		outDir  = flag.String("layout", "", "Folder of the OCI image layout to write (replaced).")
		tarPath = flag.String("tarball", "", "Path of the tarball for docker load and podman load to write (replaced).")
		repo    = flag.String("repository", "hcpsnap", "Repository name of the tarball's tag.")
		version = flag.String("version", "", "Version: the org.opencontainers.image.version label and the tarball's tag.")
		rev     = flag.String("revision", "", "Commit the image is built from: the org.opencontainers.image.revision label.")
		source  = flag.String("source", "https://github.com/hcpsnap/hcpsnap", "The org.opencontainers.image.source label.")
		arch    = flag.String("arch", runtime.GOARCH, "Architecture of the binary.")
	)
	flag.Parse()
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil || *binary == "" || *outDir == "" || *tarPath == "" {
		fmt.Fprintln(os.Stderr, "image: set SOURCE_DATE_EPOCH (the commit's time in seconds) and --binary, --layout and --tarball")
		os.Exit(2)
	}
	if err := run(*binary, *certs, Outputs{Layout: *outDir, Tarball: *tarPath, Tag: *repo + ":" + *version}, Inputs{
		Created: time.Unix(secs, 0), Version: *version, Revision: *rev, Source: *source, Arch: *arch,
	}); err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func run(binary, certs string, out Outputs, in Inputs) error {
	var err error
	if in.Binary, err = os.ReadFile(binary); err != nil {
		return err
	}
	if in.CACerts, err = os.ReadFile(certs); err != nil {
		return fmt.Errorf("%w (install Debian's ca-certificates package, or pass --ca-certs)", err)
	}
	img, err := Build(in)
	if err != nil {
		return err
	}
	digest, err := Write(img, out)
	if err != nil {
		return err
	}
	fmt.Printf("layout  %s\ntarball %s (%s)\n%s\n", out.Layout, out.Tarball, out.Tag, digest)
	return nil
}
