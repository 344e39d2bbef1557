//! File-transfer protocol over one reliable, ordered data channel.
