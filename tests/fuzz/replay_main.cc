// Replay driver: runs LLVMFuzzerTestOneInput once on every file named on the command line (or
// found in a directory named there), so fuzz targets and their corpora are exercised by any
// compiler without libFuzzer. Fails when no input was found, so a missing corpus is noticed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

// Corpus files are small by construction; refuse anything absurd rather than allocating for it.
constexpr std::uintmax_t kMaxInput = 1 << 20;

bool run_file(const std::filesystem::path& p) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(p, ec);
  if (ec || size > kMaxInput) {
    std::fprintf(stderr, "skipping %s\n", p.c_str());
    return false;
  }
  std::ifstream f(p, std::ios::binary);
  std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(data.data(), data.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t ran = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    if (std::filesystem::is_directory(arg)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(arg))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) ran += run_file(f) ? 1 : 0;
    } else {
      ran += run_file(arg) ? 1 : 0;
    }
  }
  std::printf("ran %zu inputs\n", ran);
  return ran > 0 ? 0 : 1;
}
