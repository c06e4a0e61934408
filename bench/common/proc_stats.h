// What the load generators report next to their figures: the server's CPU and resident
// memory from /proc, and their own CPU. Header-only, shared by bench/xmppload,
// bench/matrixload and bench/cpload (each its own small CMake project).
#pragma once

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

// utime + stime of a process in seconds (all its threads); 0 when it cannot be read.
inline double process_cpu_seconds(int pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto rp = s.rfind(')');
  if (rp == std::string::npos || rp + 2 > s.size()) return 0;
  std::stringstream ss(s.substr(rp + 2));
  std::vector<std::string> fields;
  for (std::string t; ss >> t;) fields.push_back(t);
  // After ")": field 3 (state) is index 0; utime is field 14, stime 15.
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// VmRSS of a process in KiB; 0 when it cannot be read.
inline long process_rss_kib(int pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

// A process and all its descendants (children, grandchildren, ...), the process first;
// empty when pid <= 0. For servers that run worker processes (CryptPad).
inline std::vector<int> process_tree(int pid) {
  std::vector<int> out;
  if (pid <= 0) return out;
  std::map<int, std::vector<int>> kids;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream f("/proc/" + name + "/stat");
      std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      auto rp = s.rfind(')');
      if (rp == std::string::npos || rp + 2 > s.size()) continue;  // gone
      std::stringstream ss(s.substr(rp + 2));
      std::string state;
      int ppid = 0;
      if (ss >> state >> ppid) kids[ppid].push_back(std::stoi(name));
    }
    closedir(d);
  }
  out.push_back(pid);
  for (std::size_t i = 0; i < out.size(); ++i)
    if (auto it = kids.find(out[i]); it != kids.end()) out.insert(out.end(), it->second.begin(), it->second.end());
  return out;
}

// This process's own user + system CPU in seconds.
inline double own_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

}  // namespace bench
