// RingQueue: a double-ended queue in one power-of-two ring buffer.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace drover {

// A queue of small values that costs nothing while empty (an empty
// std::deque of libstdc++ allocates its map and a 512-byte block), for the
// broker's one queue a task name. Push at either end and pop at the front
// are O(1) (amortized: the buffer doubles when full); remove_if keeps the
// order of what stays. shrink() gives the buffer back once it is mostly empty.
template <class T>
class RingQueue {
public:
    [[nodiscard]] bool empty() const { return size_ == 0; }
    [[nodiscard]] std::size_t size() const { return size_; }
    [[nodiscard]] std::size_t capacity() const { return buf_.size(); }
    [[nodiscard]] const T& front() const { return buf_[head_]; }
    [[nodiscard]] const T& operator[](std::size_t i) const { return buf_[(head_ + i) & (buf_.size() - 1)]; }

    void push_back(const T& v) {
        if (size_ == buf_.size()) grow();
        buf_[(head_ + size_) & (buf_.size() - 1)] = v;
        ++size_;
    }
    void push_front(const T& v) {
        if (size_ == buf_.size()) grow();
        head_ = (head_ + buf_.size() - 1) & (buf_.size() - 1);
        buf_[head_] = v;
        ++size_;
    }
    void pop_front() {
        head_ = (head_ + 1) & (buf_.size() - 1);
        --size_;
    }
    // Drops every value for which `drop(value)` holds, keeping the others' order.
    template <class Pred>
    void remove_if(Pred drop) {
        std::size_t kept = 0;
        for (std::size_t i = 0; i < size_; ++i) {
            const T& v = (*this)[i];
            if (!drop(v)) buf_[(head_ + kept++) & (buf_.size() - 1)] = v;
        }
        size_ = kept;
        shrink();
    }
    // Halves the buffer while it is at most a quarter full (none at all when empty).
    void shrink() {
        if (size_ == 0) {
            std::vector<T>().swap(buf_);
            head_ = 0;
            return;
        }
        std::size_t cap = buf_.size();
        while (cap > k_min_capacity && size_ <= cap / 4) cap /= 2;
        if (cap != buf_.size()) resize(cap);
    }
    void clear() {
        std::vector<T>().swap(buf_);
        head_ = size_ = 0;
    }

private:
    static constexpr std::size_t k_min_capacity = 8;
    void grow() { resize(buf_.empty() ? k_min_capacity : buf_.size() * 2); }
    void resize(std::size_t cap) {
        std::vector<T> next(cap);
        for (std::size_t i = 0; i < size_; ++i) next[i] = (*this)[i];
        buf_ = std::move(next);
        head_ = 0;
    }

    std::vector<T> buf_;  // capacity a power of two, or empty
    std::size_t head_ = 0, size_ = 0;
};

}  // namespace drover
