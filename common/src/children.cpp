// This process's child processes (internal/children.hpp).
#include "internal/children.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <dirent.h>
#include <unistd.h>

namespace drover {

namespace {

// Reads /proc/PID/stat: its state, parent and process group. False if it is gone.
bool read_stat(const char* pid, char& state, pid_t& ppid, pid_t& pgid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%s/stat", pid);
    std::FILE* f = std::fopen(path, "re");
    if (!f) return false;
    char buf[512];
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')', so read after the last ')'.
    const char* close = std::strrchr(buf, ')');
    int parent = 0, group = 0;
    if (!close || std::sscanf(close + 1, " %c %d %d", &state, &parent, &group) != 3) return false;
    ppid = parent;
    pgid = group;
    return true;
}

}  // namespace

std::vector<ChildProcess> child_processes() {
    std::vector<ChildProcess> out;
    DIR* proc = ::opendir("/proc");
    if (!proc) return out;
    const pid_t self = ::getpid();
    while (const dirent* e = ::readdir(proc)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char state = 0;
        pid_t ppid = 0, pgid = 0;
        if (!read_stat(e->d_name, state, ppid, pgid) || ppid != self) continue;
        out.push_back({static_cast<pid_t>(std::atoi(e->d_name)), pgid, state == 'Z'});
    }
    ::closedir(proc);
    return out;
}

}  // namespace drover
