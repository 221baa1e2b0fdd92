"""The tutorial's Queue program, made safe: producers put, the caller collects everything.

square_numbers is the tutorial's function, unchanged: it receives something with .put().
queue_collect drains while the producers run, so items of any size cannot deadlock.
"""

from parmap import Channel, queue_collect


def square_numbers(numbers: list[int], queue: Channel[int]) -> None:
    for n in numbers:
        queue.put(n * n)


if __name__ == "__main__":
    squares = queue_collect(square_numbers, [([1, 2, 3],), ([4, 5, 6],)])
    print(squares)
