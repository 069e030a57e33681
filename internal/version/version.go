package version

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit are set at link time by the Makefile
// (-X github.com/hcpsnap/hcpsnap/internal/version.Version=...).
var (
	Version = "dev"
	Commit  = ""
)

// Info is the build description printed by `hcpsnap version` and recorded in
// every backup manifest.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build description, reading the VCS revision from the build
// info when the linker did not set Commit.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" {
				info.Commit = s.Value
			}
		}
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// String renders the description on one line, as `hcpsnap version` prints it.
func (i Info) String() string {
	return "hcpsnap " + i.Version + " (commit " + i.Commit + ", " + i.GoVersion + " " + i.Platform + ")"
}
