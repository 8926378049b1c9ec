// pybind11 bindings: deepresolve_captum._C. Takes numpy arrays (buffer protocol) on the CPU and,
// when built with CUDA, raw device pointers (from __cuda_array_interface__) for the CUDA kernels.
// Argument checking that needs a good message lives in deepresolve_captum/_stats.py; the checks
// here only stop a crash if the module is called directly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "stats.hpp"
#ifdef DR_WITH_CUDA
#include "cuda/stats_cuda.h"
#endif

namespace py = pybind11;

namespace {

long elem_stride(const py::array& a, int dim) {
    const long s = (long)a.strides(dim), item = (long)a.itemsize();
    if (s % item != 0) throw std::invalid_argument("array strides must be multiples of the item size");
    return s / item;
}

template <class T>
bool is(const py::array& a) {
    return py::isinstance<py::array_t<T>>(a);
}

template <class T>
py::tuple wm_impl(py::array fiv, py::array w) {
    if (!(fiv.flags() & py::array::c_style))
        throw std::invalid_argument("fiv must be C-contiguous (the Python wrapper copies it)");
    const long C = fiv.shape(0), Tn = fiv.shape(1), K = fiv.shape(2);
    py::array_t<T> mean({C, K}), var({C, K});
    const long ws0 = elem_stride(w, 0), ws1 = elem_stride(w, 1);
    const T* fp = static_cast<const T*>(fiv.data());
    const double* wp = static_cast<const double*>(w.data());
    T* mp = mean.mutable_data();
    T* vp = var.mutable_data();
    long bad = -1;
    int st;
    {
        py::gil_scoped_release nogil;
        st = dr::weighted_moments<T>(fp, wp, ws0, ws1, C, Tn, K, mp, vp, &bad);
    }
    if (st == 1)
        throw py::value_error("weights of class " + std::to_string(bad) +
                              " are negative, non-finite or sum to zero");
    if (st == 2)
        throw py::value_error("fiv of class " + std::to_string(bad) +
                              " contains NaN or inf, or values so large that the moments overflow" +
                              (std::is_same<T, float>::value ? " float32" : ""));
    return py::make_tuple(mean, var);
}

py::tuple weighted_moments(py::array fiv, py::array w) {
    if (fiv.ndim() != 3 || w.ndim() != 2 || fiv.shape(0) != w.shape(0) || fiv.shape(1) != w.shape(1))
        throw std::invalid_argument("expected fiv (C, T, K) and weights (C, T)");
    if (fiv.size() == 0) throw std::invalid_argument("fiv is empty");
    if (!is<double>(w)) throw std::invalid_argument("weights must be float64");
    if (is<double>(fiv)) return wm_impl<double>(fiv, w);
    if (is<float>(fiv)) return wm_impl<float>(fiv, w);
    throw std::invalid_argument("fiv must be float32 or float64");
}

template <class T>
void pearson_impl(py::array x, py::array out, bool clip, long block_rows) {
    const long n = x.shape(0), K = x.shape(1);
    const long xs0 = elem_stride(x, 0), xs1 = elem_stride(x, 1);
    if (!is<T>(out)) throw std::invalid_argument("out must have the dtype of x");
    if (out.ndim() != 2 || out.shape(0) != n || out.shape(1) != n)
        throw std::invalid_argument("out must have shape (C, C)");
    if (!out.writeable()) throw std::invalid_argument("out is read-only");
    if (elem_stride(out, 1) != 1 || elem_stride(out, 0) < n)
        throw std::invalid_argument("out must have C-contiguous rows");
    const long ldo = elem_stride(out, 0);
    const T* xp = static_cast<const T*>(x.data());
    T* op = static_cast<T*>(out.mutable_data());
    long bad = -1;
    int st;
    {
        py::gil_scoped_release nogil;
        st = dr::pearson_into<T>(xp, xs0, xs1, n, K, clip, op, ldo, block_rows, &bad);
    }
    if (st == 2)
        throw py::value_error("x contains NaN or inf (row " + std::to_string(bad) + ")");
}

void pearson_into(py::array x, py::array out, bool clip_negative, long block_rows) {
    if (x.ndim() != 2) throw std::invalid_argument("expected x of shape (C, K)");
    if (x.size() == 0) throw std::invalid_argument("x is empty");
    if (is<double>(x)) return pearson_impl<double>(x, out, clip_negative, block_rows);
    if (is<float>(x)) return pearson_impl<float>(x, out, clip_negative, block_rows);
    throw std::invalid_argument("x must be float32 or float64");
}

#ifdef DR_WITH_CUDA
void check_cuda(int err) {
    if (err != 0) throw std::runtime_error(std::string("CUDA error: ") + dr_cuda_error_string(err));
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "Native kernels for deepresolve_captum: weighted moments (IL) and Pearson similarity.";
    m.def("weighted_moments", &weighted_moments, py::arg("fiv"), py::arg("weights"),
          "fiv (C, T, K) float32/float64 C-contiguous, weights (C, T) float64 -> (mean, var), each (C, K)");
    m.def("pearson_into", &pearson_into, py::arg("x"), py::arg("out"), py::arg("clip_negative") = false,
          py::arg("block_rows") = 0,
          "Fill out (C, C) with the Pearson correlation of the rows of x (C, K), block_rows rows at a time");
    m.def("isa", &dr::isa, "Instruction set of the SYRK micro-kernel in use");
    m.def("set_isa", &dr::set_isa, py::arg("name"), "Force 'avx512', 'avx2', 'generic' or 'auto'");
    m.def("available_isas", &dr::available_isas);
    m.def("num_threads", &dr::num_threads, "Worker threads per call");
    m.def("scratch_bytes", &dr::scratch_bytes,
          "Bytes of scratch (packed copies of x) kept between Pearson calls for speed, at most scratch_limit()");
    m.def("scratch_limit", &dr::scratch_limit,
          "The most scratch kept between Pearson calls, in bytes (64 MiB unless set_scratch_limit)");
    m.def("set_scratch_limit", &dr::set_scratch_limit, py::arg("bytes"),
          "Keep up to this many bytes of scratch between Pearson calls (larger: repeated calls on a big x "
          "with few rows skip re-allocating; 0: keep none); returns the previous limit. A forked child starts "
          "again at 64 MiB");
    m.def("release_scratch", &dr::release_scratch,
          "Free the scratch kept between calls (the next call allocates it again); returns the bytes freed");
    m.def("parse_threads", [](const std::string& v, bool omp_list) { return dr::parse_threads(v.c_str(), omp_list); },
          py::arg("value"), py::arg("omp_list") = false,
          "How a thread-count variable is read: its value, or -1 when it is ignored");
    m.def("set_num_threads", &dr::set_num_threads, py::arg("n"),
          "Set the worker threads per call, at most 4096 (n <= 0: DEEPRESOLVE_NUM_THREADS, OMP_NUM_THREADS or the CPUs this process may use)");
#ifdef DR_WITH_CUDA
    m.attr("has_cuda") = true;
    m.def("cuda_device_count", []() { return dr_cuda_device_count(); },
          "Number of CUDA devices this build's runtime sees (0 without a GPU or a new-enough driver)");
    m.def(
        "cuda_weighted_moments",
        [](std::uintptr_t fiv, std::uintptr_t w, std::uintptr_t mean, std::uintptr_t var, long C, long T,
           long K, bool is_double, int device, std::uintptr_t stream) {
            int err;
            {
                py::gil_scoped_release nogil;
                err = dr_cuda_weighted_moments((const void*)fiv, (const double*)w, (void*)mean, (void*)var, C, T,
                                               K, is_double ? 1 : 0, device, (void*)stream);
            }
            check_cuda(err);
        },
        py::arg("fiv"), py::arg("weights"), py::arg("mean"), py::arg("var"), py::arg("C"), py::arg("T"),
        py::arg("K"), py::arg("is_double"), py::arg("device"), py::arg("stream") = 0,
        "Device pointers: fiv (C,T,K), weights (C,T) float64, non-negative with a positive sum per class (the kernel normalises them), outputs (C,K); all contiguous");
    m.def(
        "cuda_pearson",
        [](std::uintptr_t x, std::uintptr_t work, std::uintptr_t out, long n, long K, bool is_double,
           bool clip, int device, std::uintptr_t stream) {
            int err;
            {
                py::gil_scoped_release nogil;
                err = dr_cuda_pearson((const void*)x, (void*)work, (void*)out, n, K, is_double ? 1 : 0,
                                      clip ? 1 : 0, device, (void*)stream);
            }
            check_cuda(err);
        },
        py::arg("x"), py::arg("work"), py::arg("out"), py::arg("n"), py::arg("K"), py::arg("is_double"),
        py::arg("clip_negative"), py::arg("device"), py::arg("stream") = 0,
        "Device pointers: x (n,K) contiguous, work (n,K) same dtype, out (n,n) contiguous");
#else
    m.attr("has_cuda") = false;
#endif
}
