# Homebrew formula for touchgate: builds the three programs from source and
# installs them side by side in bin (the agent believes only the touchgate-shim
# beside it), the docker-credential-touchgate link, completions and man pages
# (made by each program's `generate`), and a launchd service (`brew services
# start touchgate`: the agent in the foreground at login).
#
# Not tested in this repository's CI (no macOS or Homebrew there). homepage,
# url and sha256 are placeholders: for a release, set them to the project's
# page and the release's source tarball, then check with
# `brew install --build-from-source ./touchgate.rb && brew test touchgate &&
# brew audit --strict touchgate`.
class Touchgate < Formula
  desc "Ssh-agent for Google Cloud: touch-gated tokens from a FIDO2 security key"
  homepage "https://github.com/touchgate/touchgate"
  url "https://github.com/touchgate/touchgate/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "Apache-2.0"

  depends_on "rust" => :build

  def install
    %w[client/cli agent shim].each do |crate|
      system "cargo", "install", *std_cargo_args(path: crate)
    end
    bin.install_symlink "touchgate-shim" => "docker-credential-touchgate"
    man1.mkpath
    %w[touchgate touchgate-agent touchgate-shim].each do |program|
      generate_completions_from_executable(bin/program, "generate")
      system bin/program, "generate", "man", "--out-dir", man1
    end
  end

  service do
    run [opt_bin/"touchgate-agent", "--foreground"]
    keep_alive successful_exit: false
    log_path var/"log/touchgate-agent.log"
    error_log_path var/"log/touchgate-agent.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/touchgate --version")
    assert_match "touchgate-agent", shell_output("#{bin}/touchgate-agent --help")
    assert_path_exists man1/"touchgate.1"
  end
end
