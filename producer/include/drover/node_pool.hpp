// NodePool: recycles the nodes of one node-based container.
#pragma once

#include <cstddef>
#include <new>

namespace drover {

// A node freed by the container goes to a free list, and the next insertion
// takes it back: a steady stream of inserts and erases allocates nothing.
// The Client's map of unfinished tasks needs this: a task is inserted by the
// submitting thread and erased by the I/O thread, and glibc serves a chunk
// allocated on one thread and freed on another by its slowest path, twice a
// task. Not thread-safe: the container's users serialize its calls.
class NodePool {
public:
    NodePool() = default;
    NodePool(const NodePool&) = delete;
    NodePool& operator=(const NodePool&) = delete;
    ~NodePool() { release(); }

    // Single objects of one size (the first asked) are recycled; anything
    // else (a bucket array) goes to the global allocator.
    void* allocate(std::size_t bytes) {
        if (node_bytes_ == 0) node_bytes_ = bytes;
        if (bytes == node_bytes_ && free_) {
            Free* f = free_;
            free_ = f->next;
            --kept_;
            return f;
        }
        return ::operator new(bytes);
    }
    void deallocate(void* p, std::size_t bytes) {
        if (bytes != node_bytes_ || bytes < sizeof(Free)) return ::operator delete(p);
        free_ = new (p) Free{free_};
        ++kept_;
    }
    // Gives the free nodes back to the global allocator.
    void release() {
        while (free_) {
            Free* f = free_;
            free_ = f->next;
            ::operator delete(f);
        }
        kept_ = 0;
    }
    [[nodiscard]] std::size_t kept() const { return kept_; }

private:
    struct Free {
        Free* next;
    };
    Free* free_ = nullptr;
    std::size_t node_bytes_ = 0;
    std::size_t kept_ = 0;
};

// A standard allocator over a NodePool: single objects come from the pool.
template <class T>
class PoolAllocator {
public:
    using value_type = T;
    explicit PoolAllocator(NodePool& pool) noexcept : pool_(&pool) {}
    template <class U>
    PoolAllocator(const PoolAllocator<U>& other) noexcept : pool_(other.pool()) {}  // NOLINT: rebinding

    T* allocate(std::size_t n) {
        return n == 1 ? static_cast<T*>(pool_->allocate(sizeof(T))) : static_cast<T*>(::operator new(n * sizeof(T)));
    }
    void deallocate(T* p, std::size_t n) noexcept {
        if (n == 1) return pool_->deallocate(p, sizeof(T));
        ::operator delete(p);
    }
    [[nodiscard]] NodePool* pool() const noexcept { return pool_; }

    template <class U>
    bool operator==(const PoolAllocator<U>& o) const noexcept {
        return pool_ == o.pool();
    }
    template <class U>
    bool operator!=(const PoolAllocator<U>& o) const noexcept {
        return pool_ != o.pool();
    }

private:
    NodePool* pool_;
};

}  // namespace drover
